"""The httpx transport and clients of jobs: httpx's HTTP/1.1 transport on an httpcore
connection pool whose network backend a stop cuts short (see :mod:`model.net`)."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import httpcore
import httpx

# httpx builds its clients' proxy mounts from the environment with this function;
# using it keeps the proxies (and NO_PROXY) a plain httpx.Client would use.
from httpx._utils import get_environment_proxies

from model.net._backend import BACKEND
from model.net._stop import Interrupted, stop_requested, watcher

__all__ = ["DEFAULT_LIMITS", "Transport", "http_client", "ssl_context", "timeouts"]

#: Connections per client, as httpx's default.
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


@functools.cache
def ssl_context(verify: bool = True) -> ssl.SSLContext:
    """One TLS context per process for each ``verify`` value, shared by every client
    (building one loads the CA bundle, which is slow; a context may be shared by threads).
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
        interrupt = watcher()
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
            network_backend=BACKEND,
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
            network_backend=BACKEND,
        )
    if proxy.url.scheme in ("socks5", "socks5h"):
        return httpcore.SOCKSProxy(
            proxy_url=proxy_url,
            proxy_auth=proxy.raw_auth,
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=BACKEND,
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
