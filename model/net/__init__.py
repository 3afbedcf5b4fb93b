"""HTTP for jobs: an httpx transport whose blocking socket calls a stop cuts short.

Every client a job uses (the registry client, its token requests, the scanners' clients)
sends through :class:`Transport`. Its network backend registers the socket a connect,
TLS handshake, read or write blocks on with the calling thread's
:class:`~model.interrupt.Interrupt` (:func:`model.interrupt.current`), for the time of
that one call: :meth:`Interrupt.request <model.interrupt.Interrupt.request>`, made in
the pool's thread, shuts the socket down and the call fails at once. A request started
after the stop fails before it connects. Either way the caller gets
:class:`Interrupted` (an :class:`httpx.TransportError`), and :func:`stop_requested` tells
its error mapping that the failure is a stop, not a network fault.

A connection whose socket was shut down is closed by httpcore when the request fails
(its HTTP state is not at a clean end), so it never goes back to the pool; one shut
down just as its answer completed reads as closed (readable at EOF) and is dropped
when next taken. Outside a worker (no interrupt bound) the transport is httpx's own
behaviour: HTTP/1.1, TLS verified unless told otherwise, httpx's default limits, the
environment's proxies.
"""

from __future__ import annotations

from model.net._stop import Interrupted, stop_exempt, stop_grace, stop_requested
from model.net._transport import DEFAULT_LIMITS, Transport, http_client, ssl_context, timeouts

__all__ = [
    "DEFAULT_LIMITS",
    "Interrupted",
    "Transport",
    "http_client",
    "ssl_context",
    "stop_exempt",
    "stop_grace",
    "stop_requested",
    "timeouts",
]
