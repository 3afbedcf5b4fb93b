"""A fault proxy for tests: HTTP/1.1 on loopback in front of a real server (a
docker-registry), on asyncio in a thread of its own, that breaks chosen exchanges.

The proxy reads each request and each answer enough to frame them (head, then a body
of ``Content-Length`` bytes, chunked, or up to the close), so faults hit one exchange
of a keep-alive connection and the next exchange on it goes through untouched:

- :meth:`Fault.reset` — the connection is reset (RST) after N bytes of a body;
- :meth:`Fault.truncate` — closed cleanly (FIN) after N bytes, before ``Content-Length``;
- :meth:`Fault.stall` — nothing moves for some seconds (60 by default) after N bytes;
- :meth:`Fault.trickle` — the body goes at a given rate (100 KB/s by default);
- :meth:`Fault.flip` — one byte of a body is inverted;
- :meth:`Fault.status` — the request gets an answer of the proxy's own (500, 502, 503, a
  429 with ``Retry-After``…) and never reaches the server; its body is read and
  dropped first, as a front end that refuses it would;
- :meth:`FaultProxy.randomly` — each exchange is answered 500 with a probability, or
  has its connection reset at a random point of its (request or answer) body.

A fault matches a method and a regular expression searched in the request target,
hits the body of the request or of the answer, and fires a given number of times (a
fault placed after N bytes of a body does not count for a body shorter than that).
Faults are set and cleared from the test's thread while the proxy runs; each one that
fires is recorded (:attr:`FaultProxy.fired`, :meth:`FaultProxy.wait_fired`). The proxy
counts the bytes it read from clients and wrote to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Fault", "FaultProxy"]

#: Bytes read at a time from either side.
READ_BYTES = 256 * 1024
#: Seconds between two pieces of a trickled body.
TRICKLE_TICK_S = 0.05
#: Seconds the proxy's start and stop may take.
START_STOP_TIMEOUT_S = 10.0

_REASONS = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

Kind = Literal["reset", "truncate", "stall", "trickle", "flip", "status"]
Side = Literal["request", "response"]


@dataclass
class Fault:
    """One fault: what it does (``kind``), to which exchanges (``method``, ``path``
    searched in the request target), on which body (``on``), and how many times
    (``times``; None: every matching exchange)."""

    kind: Kind
    method: str | None = None
    path: str | None = None
    on: Side = "response"
    #: Where in the body the fault strikes (bytes forwarded first); None: before the
    #: head of an answer (reset, stall) or the first byte of a request body.
    after_bytes: int | None = 0
    #: Where in the body, as a fraction of its length (overrides ``after_bytes``).
    at_fraction: float | None = None
    seconds: float = 60.0
    rate_bytes_s: int = 100_000
    statuses: tuple[int, ...] = (500,)
    retry_after: str | None = None
    times: int | None = 1
    #: Exchanges hit so far.
    hits: int = 0

    # -- the kinds ---------------------------------------------------------------------

    @classmethod
    def reset(cls, after_bytes: int | None = 0, **match: object) -> Fault:
        """The connection reset (RST) after ``after_bytes`` of a body."""
        return cls("reset", after_bytes=after_bytes, **match)  # type: ignore[arg-type]

    @classmethod
    def truncate(cls, after_bytes: int = 0, **match: object) -> Fault:
        """The connection closed (FIN) after ``after_bytes`` of a body, short of its
        ``Content-Length``."""
        return cls("truncate", after_bytes=after_bytes, **match)  # type: ignore[arg-type]

    @classmethod
    def stall(cls, seconds: float = 60.0, after_bytes: int | None = 0, **match: object) -> Fault:
        """Nothing forwarded for ``seconds`` after ``after_bytes`` of a body."""
        return cls("stall", seconds=seconds, after_bytes=after_bytes, **match)  # type: ignore[arg-type]

    @classmethod
    def trickle(cls, rate_bytes_s: int = 100_000, **match: object) -> Fault:
        """A body forwarded at ``rate_bytes_s``."""
        return cls("trickle", rate_bytes_s=rate_bytes_s, **match)  # type: ignore[arg-type]

    @classmethod
    def flip(cls, after_bytes: int = 0, **match: object) -> Fault:
        """The byte at offset ``after_bytes`` of a body inverted."""
        return cls("flip", after_bytes=after_bytes, **match)  # type: ignore[arg-type]

    @classmethod
    def status(cls, *statuses: int, retry_after: str | None = None, **match: object) -> Fault:
        """Answers of the proxy's own, in turn, one per matching exchange (``times``
        defaults to the number of statuses)."""
        match.setdefault("times", len(statuses))
        return cls(
            "status",
            statuses=statuses,
            retry_after=retry_after,
            **match,  # type: ignore[arg-type]
        )

    def matches(self, method: str, target: str, request_length: int | None) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and method != self.method:
            return False
        if self.on == "request" and self.kind in ("reset", "truncate", "stall", "flip"):
            # A request body is known to be too short before it is read.
            place = self.after_bytes
            if place is not None and self.at_fraction is None and (request_length or 0) <= place:
                return False
        return self.path is None or re.search(self.path, target) is not None

    def describe(self) -> str:
        what = {
            "reset": f"reset after {self.after_bytes} bytes",
            "truncate": f"closed after {self.after_bytes} bytes",
            "stall": f"stalled {self.seconds:g} s after {self.after_bytes} bytes",
            "trickle": f"trickled at {self.rate_bytes_s} B/s",
            "flip": f"byte {self.after_bytes} flipped",
            "status": f"answered {self.statuses}",
        }[self.kind]
        return f"{what} ({self.on})"


@dataclass
class _Random:
    error_rate: float
    drop_rate: float
    rng: random.Random


@dataclass
class _Exchange:
    """One request's framing."""

    method: str
    target: str
    head: bytes
    length: int | None  # Content-Length; None: chunked or no body
    chunked: bool
    close: bool
    status: int = 500  # the answer of a status fault


@dataclass
class _Stats:
    bytes_from_clients: int = 0
    bytes_to_clients: int = 0
    exchanges: int = 0
    connections: int = 0
    fired: list[str] = field(default_factory=list)


class _Dropped(Exception):
    """The proxy broke the connection on purpose."""

    def __init__(self, rst: bool) -> None:
        super().__init__("dropped")
        self.rst = rst


class FaultProxy:
    """A proxy on ``127.0.0.1:<port>`` in front of ``upstream`` (``host:port``), in its
    own thread and event loop. :meth:`add`, :meth:`clear` and :meth:`randomly` may be
    called from any thread while it runs."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.port = 0
        self._faults: list[Fault] = []
        self._random: _Random | None = None
        self._stats = _Stats()
        self._lock = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None

    # -- the test's side ---------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def add(self, *faults: Fault) -> None:
        """Faults to apply from the next exchange on (the first that matches wins)."""
        with self._lock:
            self._faults.extend(faults)

    def clear(self) -> None:
        """No fault from the next exchange on (a fault under way goes on)."""
        with self._lock:
            self._faults.clear()
            self._random = None

    def reset_counts(self) -> None:
        """Forgets the faults fired and the bytes and exchanges counted so far."""
        with self._lock:
            self._stats = _Stats(connections=self._stats.connections)

    def randomly(self, error_rate: float, drop_rate: float, *, seed: int = 0) -> None:
        """Each exchange is answered 500 with probability ``error_rate``, or has its
        connection reset at a random point of its body (the request's when it has one,
        else the answer's) with probability ``drop_rate``."""
        with self._lock:
            self._random = _Random(error_rate, drop_rate, random.Random(seed))

    @property
    def fired(self) -> list[str]:
        """A line per fault applied so far: ``METHOD target: what``."""
        with self._lock:
            return list(self._stats.fired)

    def wait_fired(self, count: int = 1, timeout_s: float = 30.0) -> list[str]:
        """Waits until ``count`` faults have been applied; AssertionError at the
        deadline."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._stats.fired) >= count, timeout_s):
                raise AssertionError(f"{count} fault(s) not applied within {timeout_s} s")
            return list(self._stats.fired)

    @property
    def bytes_from_clients(self) -> int:
        """Bytes read from clients (heads and bodies, dropped ones included)."""
        return self._stats.bytes_from_clients

    @property
    def bytes_to_clients(self) -> int:
        """Bytes written to clients."""
        return self._stats.bytes_to_clients

    @property
    def exchanges(self) -> int:
        return self._stats.exchanges

    def start(self) -> FaultProxy:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._serve, "127.0.0.1", 0, limit=READ_BYTES)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="FaultProxyThread", daemon=True)
        self._thread.start()
        if not started.wait(START_STOP_TIMEOUT_S):
            raise RuntimeError("fault proxy did not start")
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(START_STOP_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(START_STOP_TIMEOUT_S)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loop's side ---------------------------------------------------------------

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=START_STOP_TIMEOUT_S)

    def _pick(self, exchange: _Exchange) -> Fault | None:
        """The fault for an exchange (marked as hit), if any."""
        with self._lock:
            self._stats.exchanges += 1
            for fault in self._faults:
                if fault.matches(exchange.method, exchange.target, exchange.length):
                    fault.hits += 1
                    exchange.status = fault.statuses[(fault.hits - 1) % len(fault.statuses)]
                    return fault
            chance = self._random
            if chance is None:
                return None
            roll = chance.rng.random()
            if roll < chance.error_rate:
                exchange.status = 500
                return Fault("status")
            if roll < chance.error_rate + chance.drop_rate:
                fraction = chance.rng.random()
                if exchange.length:
                    return Fault("reset", on="request", at_fraction=fraction)
                return Fault("reset", on="response", at_fraction=fraction)
            return None

    def _record(self, exchange: _Exchange, fault: Fault, detail: str = "") -> None:
        with self._lock:
            self._stats.fired.append(
                f"{exchange.method} {exchange.target}: {detail or fault.describe()}"
            )
            self._lock.notify_all()

    def _count(self, *, received: int = 0, sent: int = 0) -> None:
        with self._lock:
            self._stats.bytes_from_clients += received
            self._stats.bytes_to_clients += sent

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._lock:
            self._stats.connections += 1
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        rst = False
        try:
            while True:
                head = await _read_head(client_r)
                if head is None:
                    break
                self._count(received=len(head))
                exchange = _request(head)
                fault = self._pick(exchange)
                if fault is not None and fault.kind == "status":
                    await self._refuse(exchange, fault, client_r, client_w)
                    if exchange.close:
                        break
                    continue
                if upstream is None:
                    upstream = await asyncio.open_connection(*self.upstream, limit=READ_BYTES)
                up_r, up_w = upstream
                up_w.write(exchange.head)
                request_fault = fault if fault is not None and fault.on == "request" else None
                await self._body(
                    client_r,
                    up_w,
                    exchange.length,
                    exchange.chunked,
                    request_fault,
                    exchange,
                    from_client=True,
                )
                close = await self._answer(
                    exchange,
                    fault if fault is not None and fault.on == "response" else None,
                    up_r,
                    client_w,
                )
                if close or exchange.close:
                    break
        except _Dropped as drop:
            rst = drop.rst
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            rst = True
        except asyncio.CancelledError:
            rst = True
        finally:
            self._tasks.discard(task)
            _close(client_w, rst=rst)
            if upstream is not None:
                _close(upstream[1], rst=rst)

    async def _refuse(
        self,
        exchange: _Exchange,
        fault: Fault,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
    ) -> None:
        """Reads and drops the request body, then answers ``exchange.status``."""
        await self._body(client_r, None, exchange.length, exchange.chunked, None, exchange, True)
        status = exchange.status
        body = b'{"errors":[{"code":"UNAVAILABLE","message":"refused by the fault proxy"}]}'
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        if fault.retry_after is not None:
            lines.append(f"Retry-After: {fault.retry_after}")
        if exchange.close:
            lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode()
        if exchange.method != "HEAD":
            data += body
        client_w.write(data)
        await client_w.drain()
        self._count(sent=len(data))
        detail = f"answered {status}" + (
            f" (Retry-After: {fault.retry_after})" if fault.retry_after is not None else ""
        )
        self._record(exchange, fault, detail)

    async def _answer(
        self,
        exchange: _Exchange,
        fault: Fault | None,
        up_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
    ) -> bool:
        """Forwards the server's answer (after any 1xx); returns whether the connection
        ends with it."""
        while True:
            head = await _read_head(up_r)
            if head is None:
                raise _Dropped(rst=False)
            status, length, chunked, close = _response(head, exchange.method)
            if 100 <= status < 200 and status != 101:
                client_w.write(head)
                self._count(sent=len(head))
                continue
            break
        if length is None and not chunked:
            length, close = -1, True  # up to the close
        before_head = fault is not None and (
            (fault.after_bytes is None and fault.at_fraction is None)
            or (length == 0 and fault.kind == "reset")
        )
        if fault is not None and before_head:
            # The server's answer is lost: the request took effect, the client never knows.
            self._record(exchange, fault, f"{fault.kind} before the answer's head")
            if fault.kind in ("reset", "truncate"):
                raise _Dropped(rst=fault.kind == "reset")
            if fault.kind == "stall":
                await asyncio.sleep(fault.seconds)
            fault = None
        client_w.write(head)
        self._count(sent=len(head))
        await self._body(up_r, client_w, length, chunked, fault, exchange, from_client=False)
        await client_w.drain()
        return close

    async def _body(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None,
        length: int | None,
        chunked: bool,
        fault: Fault | None,
        exchange: _Exchange,
        from_client: bool,
    ) -> None:
        """Forwards one body (``length`` bytes, -1 up to the close, or chunked) to
        ``writer`` (None: dropped), applying ``fault`` to its bytes."""
        if chunked:
            await self._chunked(reader, writer, from_client)
            return
        if length is None or length == 0:
            if fault is not None and fault.kind in ("reset", "truncate", "stall"):
                self._record(exchange, fault, f"{fault.kind} at an empty body ({fault.on})")
                if fault.kind == "stall":
                    await asyncio.sleep(fault.seconds)
                    return
                raise _Dropped(rst=fault.kind == "reset")
            return
        if fault is not None and fault.kind == "trickle":
            self._record(exchange, fault)
        strike = None
        if fault is not None:
            strike = fault.after_bytes or 0
            if fault.at_fraction is not None:
                strike = int(fault.at_fraction * max(length, 0))
        done = 0
        while length < 0 or done < length:
            want = READ_BYTES if length < 0 else min(READ_BYTES, length - done)
            if fault is not None and fault.kind == "trickle":
                want = min(want, max(1, int(fault.rate_bytes_s * TRICKLE_TICK_S)))
            if fault is not None and strike is not None and done < strike:
                want = min(want, strike - done)
            if fault is not None and strike is not None and done == strike:
                await self._strike(fault, exchange, done, writer)
                if fault.kind in ("stall", "trickle"):
                    strike = None
            data = await reader.read(want)
            if not data:
                if length < 0:
                    return
                raise _Dropped(rst=False)
            if from_client:
                self._count(received=len(data))
            flip = fault is not None and fault.kind == "flip" and strike is not None
            if flip and strike is not None and done <= strike < done + len(data):
                flipped = bytearray(data)
                flipped[strike - done] ^= 0xFF
                data = bytes(flipped)
                strike = None
            done += len(data)
            await self._forward(writer, data, from_client)
            if fault is not None and fault.kind == "trickle":
                await asyncio.sleep(len(data) / fault.rate_bytes_s)
        if fault is not None and strike is not None and fault.kind != "trickle":
            with self._lock:
                fault.hits -= 1  # the body ended before the fault's place: not applied

    async def _chunked(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None, from_client: bool
    ) -> None:
        """Forwards a chunked body as it is (no fault applies to one)."""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                trailer = size_line
                while True:
                    line = await reader.readuntil(b"\r\n")
                    trailer += line
                    if line == b"\r\n":
                        break
                if from_client:
                    self._count(received=len(trailer))
                await self._forward(writer, trailer, from_client)
                return
            data = size_line + await reader.readexactly(size + 2)
            if from_client:
                self._count(received=len(data))
            await self._forward(writer, data, from_client)

    async def _strike(
        self,
        fault: Fault,
        exchange: _Exchange,
        position: int,
        writer: asyncio.StreamWriter | None,
    ) -> None:
        """Applies a positional fault at ``position`` of a body."""
        if fault.kind == "flip":
            self._record(exchange, fault, f"byte {position} flipped ({fault.on})")
            return
        if writer is not None:
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        detail = {
            "reset": f"reset after {position} bytes ({fault.on})",
            "truncate": f"closed after {position} bytes ({fault.on})",
            "stall": f"stalled {fault.seconds:g} s after {position} bytes ({fault.on})",
        }.get(fault.kind)
        if detail is None:
            return
        self._record(exchange, fault, detail)
        if fault.kind == "stall":
            await asyncio.sleep(fault.seconds)
            return
        raise _Dropped(rst=fault.kind == "reset")

    async def _forward(
        self, writer: asyncio.StreamWriter | None, data: bytes, from_client: bool
    ) -> None:
        if writer is None:
            return
        writer.write(data)
        await writer.drain()
        if not from_client:
            self._count(sent=len(data))


# -- HTTP/1.1 framing ------------------------------------------------------------------


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """A request or status line with its headers, up to the blank line; None at a
    clean end of the connection."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def _request(head: bytes) -> _Exchange:
    first, headers = _headers(head)
    method, target, version = [*first.split(" ", 2), "", ""][:3]
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    length = None if chunked else int(headers.get("content-length", "0") or 0)
    close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
    return _Exchange(method, target, head, length, chunked, close)


def _response(head: bytes, method: str) -> tuple[int, int | None, bool, bool]:
    """``(status, content length or None, chunked, close)`` of an answer's head."""
    first, headers = _headers(head)
    parts = first.split(" ", 2)
    status = int(parts[1])
    close = headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0"
    if not _has_body(status, method):
        return status, 0, False, close
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    if chunked:
        return status, None, True, close
    length = headers.get("content-length")
    return status, int(length) if length is not None else None, False, close


def _has_body(status: int, method: str) -> bool:
    return not (method == "HEAD" or 100 <= status < 200 or status in (204, 304))


def _close(writer: asyncio.StreamWriter, *, rst: bool) -> None:
    if rst:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()
