"""Which requests of the calling thread a stop of its job cuts short, and when: the
interrupt that watches them, and the blocks exempt from it (the cleanup after a stop)
or given a grace (a body the far side keeps only whole)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from model.interrupt import Interrupt, current

__all__ = ["Interrupted", "grace_s", "stop_exempt", "stop_grace", "stop_requested", "watcher"]


class Interrupted(httpx.NetworkError):
    """A request failed, or was refused before it started, because a stop of the
    calling worker's job was requested."""


_exempt = threading.local()


def watcher() -> Interrupt | None:
    """The interrupt that watches the calling thread's requests: its worker's, None
    outside a worker or inside :func:`stop_exempt`."""
    return None if getattr(_exempt, "on", False) else current()


def stop_requested() -> Interrupt | None:
    """The calling thread's interrupt when a stop of its job was requested, else None
    (None inside :func:`stop_exempt` too).

    For error mappings: a transport error raised while this is set is a stop."""
    interrupt = watcher()
    return interrupt if interrupt is not None and interrupt.requested else None


@contextmanager
def stop_exempt() -> Iterator[None]:
    """Requests the calling thread makes in the block go out even after a stop of its
    job, and a stop does not cut them short: for the cleanup that releases what a
    stopped job holds on the far side (an upload session). Give them a short timeout."""
    before = getattr(_exempt, "on", False)
    _exempt.on = True
    try:
        yield
    finally:
        _exempt.on = before


@contextmanager
def stop_grace(seconds: float) -> Iterator[None]:
    """A stop lets the socket calls the calling thread makes in the block go on for
    ``seconds`` before it cuts them: for a request whose body the far side keeps only
    whole (an upload ``PATCH``), so that it answers with the session's new address and
    the session can then be cancelled."""
    before = getattr(_exempt, "grace", 0.0)
    _exempt.grace = seconds
    try:
        yield
    finally:
        _exempt.grace = before


def grace_s() -> float:
    """Seconds a stop lets the calling thread's socket calls go on (see
    :func:`stop_grace`); 0 outside such a block."""
    return float(getattr(_exempt, "grace", 0.0))
