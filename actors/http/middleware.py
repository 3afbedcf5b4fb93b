"""The HTTP API's pure ASGI middleware: they answer before routing (auth, body limit,
database guard) or count every answer (metrics)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse
from starlette.requests import cookie_parser

from actors.http.errors import RETRY_LATER, error_response
from actors.http.metrics import ServiceMetrics

__all__ = [
    "OPEN_PATHS",
    "BodyLimit",
    "DatabaseGuard",
    "RequestMetrics",
    "SecretCookieAuth",
]

#: Paths anyone may read: probes, metrics and the API's description.
OPEN_PATHS = frozenset({"/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# -- middleware (pure ASGI: they answer before routing, and bodies are read once) ---------


class SecretCookieAuth:
    """Refuses requests without the cookie ``secret`` (401) or with a wrong one (403),
    comparing in constant time; :data:`OPEN_PATHS` pass, and so do ``own_auth``, the
    paths whose route checks credentials of its own (the registry's notifications)."""

    def __init__(self, app: ASGIApp, secret: str, own_auth: frozenset[str] = frozenset()) -> None:
        self.app = app
        self._secret = secret.encode()
        self._open = OPEN_PATHS | own_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._open:
            await self.app(scope, receive, send)
            return
        given = _cookie_values(scope["headers"], "secret")
        if len(given) > 1:
            # Which copy a proxy or framework picks differs: refuse to guess.
            response = error_response(
                400, f"the cookie 'secret' is sent {len(given)} times: send it once", "secret"
            )
        elif not given:
            response = error_response(401, "the cookie 'secret' is missing", "secret")
        elif not hmac.compare_digest(given[0].encode("utf-8", "surrogateescape"), self._secret):
            response = error_response(403, "the cookie 'secret' is wrong", "secret")
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


def _cookie_values(headers: list[tuple[bytes, bytes]], wanted: str) -> list[str]:
    """Every value of the cookie ``wanted`` in every ``Cookie`` header, parsed as
    Starlette parses one (so a copy it would see is never missed here)."""
    values = []
    for name, value in headers:
        if name == b"cookie":
            for chunk in value.decode("latin-1").split(";"):
                parsed = cookie_parser(chunk)
                if wanted in parsed:
                    values.append(parsed[wanted])
    return values


class BodyLimit:
    """Answers 413 to a request whose body exceeds ``max_bytes`` (by its
    ``Content-Length`` or, when chunked, as it arrives), and 400 to one whose body was
    cut short (the client left before sending all of it, or sent fewer bytes than its
    ``Content-Length``): no route ever sees part of a body. Passes the whole body on
    otherwise."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = error_response(
            413, f"the request body exceeds the limit of {self.max_bytes} bytes", "body"
        )
        declared: int | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await error_response(400, "Content-Length is not a number", "content-length")(
                        scope, receive, send
                    )
                    return
                if declared > self.max_bytes:
                    await too_big(scope, receive, send)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client left mid-body: what arrived is not the request it meant,
                # so no route runs (the server drops the answer if nobody is there).
                await _cut_short(size, declared)(scope, receive, send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await too_big(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if declared is not None and size != declared:
            await _cut_short(size, declared)(scope, receive, send)
            return
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _cut_short(size: int, declared: int | None) -> JSONResponse:
    expected = f" of the {declared} its Content-Length declared" if declared is not None else ""
    return error_response(
        400, f"the request body was cut short: {size} bytes arrived{expected}", "body"
    )


class DatabaseGuard:
    """Answers 503 to every ``/api/`` request while ``problem()`` names one (the
    database file deleted or replaced under the service): nothing is read from or
    written into a database nobody will read again. ``problem`` runs on the event
    loop, once per request: it must be quick (a cached ``stat``)."""

    def __init__(self, app: ASGIApp, problem: Callable[[], str | None]) -> None:
        self.app = app
        self.problem = problem

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            problem = self.problem()
            if problem is not None:
                response = error_response(
                    503, f"the database is unavailable: {problem}", headers=RETRY_LATER
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RequestMetrics:
    """Counts answered requests by method, route template and status code."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def noting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, noting)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "other"
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
