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

import functools
import select
import socket
import ssl
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpcore
import httpx

# httpx builds its clients' proxy mounts from the environment with this function;
# using it keeps the proxies (and NO_PROXY) a plain httpx.Client would use.
from httpx._utils import get_environment_proxies

from model.interrupt import Interrupt, current

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

#: Connections per client, as httpx's default.
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)

_SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class Interrupted(httpx.NetworkError):
    """A request failed, or was refused before it started, because a stop of the
    calling worker's job was requested."""


_exempt = threading.local()


def _watcher() -> Interrupt | None:
    """The interrupt that watches the calling thread's requests: its worker's, None
    outside a worker or inside :func:`stop_exempt`."""
    return None if getattr(_exempt, "on", False) else current()


def stop_requested() -> Interrupt | None:
    """The calling thread's interrupt when a stop of its job was requested, else None
    (None inside :func:`stop_exempt` too).

    For error mappings: a transport error raised while this is set is a stop."""
    interrupt = _watcher()
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


@functools.cache
def ssl_context(verify: bool = True) -> ssl.SSLContext:
    """One TLS context per process for each ``verify`` value, shared by every client
    (building one loads the CA bundle, some 50 ms; a context may be shared by threads).
    ``verify=False`` checks neither the certificate nor the host name."""
    return httpx.create_ssl_context(verify=verify)


def timeouts(connect_s: float, read_s: float) -> httpx.Timeout:
    """``connect_s`` to connect (TLS handshake included); ``read_s`` for the next bytes
    of an answer, for the far side to take more bytes of a request body, and for a
    free connection of the client's pool."""
    return httpx.Timeout(read_s, connect=connect_s)


def http_client(
    *,
    timeout: httpx.Timeout,
    verify: bool | ssl.SSLContext = True,
    transport: httpx.BaseTransport | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Client:
    """An :class:`httpx.Client` that sends through :class:`Transport` (and through the
    environment's proxies, each by a :class:`Transport` too), redirects not followed
    unless a request asks. ``transport`` replaces all of them (tests)."""
    mounts: dict[str, httpx.BaseTransport | None] | None = None
    if transport is None:
        transport = Transport(verify=verify)
        mounts = {
            pattern: None if url is None else Transport(verify=verify, proxy=httpx.Proxy(url))
            for pattern, url in get_environment_proxies().items()
        }
    return httpx.Client(
        transport=transport,
        mounts=mounts,
        timeout=timeout,
        follow_redirects=False,
        headers=headers,
    )


class Transport(httpx.BaseTransport):
    """httpx's HTTP/1.1 transport on an httpcore connection pool whose sockets a stop
    shuts down (see the module docstring). ``verify``: verify TLS certificates (the
    process's shared context), or the context to use. ``proxy``: an HTTP(S) or SOCKS5
    proxy to send through. Thread-safe, as httpx's."""

    def __init__(
        self,
        *,
        verify: bool | ssl.SSLContext = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
        proxy: httpx.Proxy | None = None,
    ) -> None:
        context = verify if isinstance(verify, ssl.SSLContext) else ssl_context(verify)
        self._pool = _connection_pool(context, limits, proxy)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        interrupt = _watcher()
        if interrupt is not None and interrupt.requested:
            raise Interrupted(f"stop of job {interrupt.job_id} requested", request=request)
        assert isinstance(request.stream, httpx.SyncByteStream)
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _mapped_errors():
            response = self._pool.handle_request(core_request)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


def _connection_pool(
    context: ssl.SSLContext, limits: httpx.Limits, proxy: httpx.Proxy | None
) -> httpcore.ConnectionPool:
    if proxy is None:
        return httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_BACKEND,
        )
    proxy_url = httpcore.URL(
        scheme=proxy.url.raw_scheme,
        host=proxy.url.raw_host,
        port=proxy.url.port,
        target=proxy.url.raw_path,
    )
    if proxy.url.scheme in ("http", "https"):
        return httpcore.HTTPProxy(
            proxy_url=proxy_url,
            proxy_auth=proxy.raw_auth,
            proxy_headers=proxy.headers.raw,
            ssl_context=context,
            proxy_ssl_context=proxy.ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_BACKEND,
        )
    if proxy.url.scheme in ("socks5", "socks5h"):
        return httpcore.SOCKSProxy(
            proxy_url=proxy_url,
            proxy_auth=proxy.raw_auth,
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_BACKEND,
        )
    raise ValueError(f"proxy {proxy.url.scheme}:// is not supported (http, https, socks5)")


#: httpcore's errors and httpx's for each, the most specific first.
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """httpcore's errors as httpx's; any of them after a stop as :class:`Interrupted`."""
    try:
        yield
    except Exception as exc:
        mapped = next((to for core, to in _ERRORS if isinstance(exc, core)), None)
        if mapped is None:
            raise
        interrupt = stop_requested()
        if interrupt is not None:
            raise Interrupted(f"stop of job {interrupt.job_id} requested: {exc}") from exc
        raise mapped(str(exc)) from exc


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _mapped_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


# -- the network backend ------------------------------------------------------------------


@contextmanager
def _unwatched() -> Iterator[None]:
    yield


def _watching(interrupt: Interrupt | None, sock: socket.socket) -> AbstractContextManager[None]:
    if interrupt is None:
        return _unwatched()
    return interrupt.watching(sock, getattr(_exempt, "grace", 0.0))


def _stopped(interrupt: Interrupt | None) -> bool:
    """Whether an unexpected error of a socket call is a stop's doing: an SSL socket
    shut down from another thread may fail with ValueError or AttributeError (its SSL
    object is dropped under the reader). Without a stop such an error is a bug, raised
    as it is."""
    return interrupt is not None and interrupt.requested


class _Backend(httpcore.NetworkBackend):
    """httpcore's sync backend with every blocking call watched by the calling thread's
    interrupt."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        interrupt = _watcher()
        if interrupt is not None and interrupt.requested:
            raise httpcore.ConnectError("stop requested")
        try:
            addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        error: OSError | None = None
        # As socket.create_connection, with each connect watched.
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(timeout)
                if local_address is not None:
                    sock.bind((local_address, 0))
                with _watching(interrupt, sock):
                    sock.connect(address)
                return _Stream(sock)
            except OSError as exc:
                sock.close()
                error = exc
                if interrupt is not None and interrupt.requested:
                    break
        if isinstance(error, TimeoutError):
            raise httpcore.ConnectTimeout(str(error) or "timed out") from error
        raise httpcore.ConnectError(str(error or f"no address for {host}")) from error

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        interrupt = _watcher()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.settimeout(timeout)
            with _watching(interrupt, sock):
                sock.connect(path)
        except TimeoutError as exc:
            sock.close()
            raise httpcore.ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            sock.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return _Stream(sock)

    def sleep(self, seconds: float) -> None:
        interrupt = _watcher()
        if interrupt is None:
            httpcore.SyncBackend().sleep(seconds)
        else:
            interrupt.wait(seconds)


_BACKEND = _Backend()


class _Stream(httpcore.NetworkStream):
    """One connection's socket (plain or TLS); each blocking call is watched."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        interrupt = _watcher()
        sock = self._sock
        try:
            sock.settimeout(timeout)
            if interrupt is None:
                return sock.recv(max_bytes)
            with _watching(interrupt, sock):
                data = sock.recv(max_bytes)
            if not data and interrupt.requested:
                # A socket shut down on this side reads as the far side's end.
                raise httpcore.ReadError("stop requested")
            return data
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc
        except httpcore.ReadError:
            raise
        except Exception as exc:
            if _stopped(interrupt):
                raise httpcore.ReadError("stop requested") from exc
            raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        interrupt = _watcher()
        try:
            with _watching(interrupt, self._sock):
                self._send(buffer, timeout)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc
        except Exception as exc:
            if _stopped(interrupt):
                raise httpcore.WriteError("stop requested") from exc
            raise

    def _send(self, buffer: bytes, timeout: float | None) -> None:
        sock, view = self._sock, memoryview(buffer)
        while view:
            sock.settimeout(timeout)  # for each send, as httpcore's own stream
            view = view[sock.send(view) :]

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        interrupt = _watcher()
        if isinstance(self._sock, ssl.SSLSocket):
            return self._tls_in_tls(ssl_context, server_hostname, timeout)
        try:
            self._sock.settimeout(timeout)
            # The handshake runs after wrapping, watched: wrapping detaches the plain
            # socket, whose shutdown would then reach nothing.
            tls = ssl_context.wrap_socket(
                self._sock, server_hostname=server_hostname, do_handshake_on_connect=False
            )
        except Exception:
            self.close()
            raise
        try:
            with _watching(interrupt, tls):
                tls.do_handshake()
        except TimeoutError as exc:
            tls.close()
            raise httpcore.ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            tls.close()
            raise httpcore.ConnectError(str(exc)) from exc
        except Exception as exc:
            tls.close()
            if _stopped(interrupt):
                raise httpcore.ConnectError("stop requested") from exc
            raise
        return _Stream(tls)

    def _tls_in_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None, timeout: float | None
    ) -> httpcore.NetworkStream:
        """TLS to a host behind an HTTPS proxy: httpcore's own TLS-in-TLS stream, its
        calls watched on this socket."""
        from httpcore._backends.sync import TLSinTLSStream

        sock = self._sock
        try:
            with _watching(_watcher(), sock):
                inner = TLSinTLSStream(sock, ssl_context, server_hostname, timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return _TunnelStream(inner, sock)

    def get_extra_info(self, info: str) -> Any:
        return _extra_info(self._sock, info)


class _TunnelStream(httpcore.NetworkStream):
    """A TLS stream inside a TLS connection to a proxy; each call watched on the outer
    socket."""

    def __init__(self, inner: httpcore.NetworkStream, sock: socket.socket) -> None:
        self._inner = inner
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _watching(_watcher(), self._sock):
            return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with _watching(_watcher(), self._sock):
            self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        raise NotImplementedError("TLS inside TLS inside TLS")

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


def _extra_info(sock: socket.socket, info: str) -> Any:
    if info == "ssl_object":
        # An SSLSocket answers what httpcore asks an SSL object (ALPN, peer certificate).
        return sock if isinstance(sock, ssl.SSLSocket) else None
    if info == "client_addr":
        return sock.getsockname()
    if info == "server_addr":
        return sock.getpeername()
    if info == "socket":
        return sock
    if info == "is_readable":
        return _readable(sock)
    return None


def _readable(sock: socket.socket) -> bool:
    """Whether a read would not block (data, or the end): an idle pooled connection
    that is readable was closed by the far side (or shut down) and is dropped."""
    fd = sock.fileno()
    if fd < 0:
        return True
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    return bool(poll.poll(0))
