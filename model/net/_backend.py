"""httpcore's sync network backend with every blocking socket call (connect, TLS
handshake, read, write) watched by the calling thread's interrupt, so that a stop
shuts the socket down and the call fails at once (see :mod:`model.net`)."""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpcore

from model.interrupt import Interrupt
from model.net._stop import grace_s, watcher

__all__ = ["BACKEND"]

_SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


@contextmanager
def _unwatched() -> Iterator[None]:
    yield


def _watching(interrupt: Interrupt | None, sock: socket.socket) -> AbstractContextManager[None]:
    if interrupt is None:
        return _unwatched()
    return interrupt.watching(sock, grace_s())


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
        interrupt = watcher()
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
        interrupt = watcher()
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
        interrupt = watcher()
        if interrupt is None:
            httpcore.SyncBackend().sleep(seconds)
        else:
            interrupt.wait(seconds)


BACKEND = _Backend()


class _Stream(httpcore.NetworkStream):
    """One connection's socket (plain or TLS); each blocking call is watched."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        interrupt = watcher()
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
        interrupt = watcher()
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
        interrupt = watcher()
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
            with _watching(watcher(), sock):
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
        with _watching(watcher(), self._sock):
            return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with _watching(watcher(), self._sock):
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
