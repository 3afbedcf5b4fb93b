"""The dashboard's door in the HTTP API: an ASGI middleware that hands every request
under ``/ui`` to the dashboard's own app and every other one on.

The dashboard answers a missing or wrong secret with its login page, not the API's
401/403, so it sits outside the API's cookie check (see :func:`create_app`, which adds
it just after :class:`~actors.http.middleware.SecretCookieAuth`); its pages check the
cookie themselves (:func:`~actors.http.ui._deps.logged_in`), and its forms a CSRF token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from actors.http.errors import ANSWERS
from actors.http.middleware import ASGIApp, BodyLimit, Message, Receive, Scope, Send
from actors.http.ui._auth import Session
from actors.http.ui._deps import CsrfRefused, LoginRequired
from actors.http.ui._render import Pages
from actors.http.ui.routes import ROUTERS
from actors.service import JobService
from model.errors import JobServiceError
from model.registry import RegistryError

__all__ = ["PREFIX", "Dashboard", "create_ui"]

#: Where the dashboard lives.
PREFIX = "/ui"
_STATIC = Path(__file__).parent / "static"

#: Headers of every dashboard answer: its own scripts and styles only, no framing, no
#: caching of pages that show the service's state.
_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class Dashboard:
    """Serves ``/ui`` (and ``/ui/…``) with the dashboard of ``service``; passes the
    rest to ``app``. ``secret`` is the service's ``ui_secret``; ``max_bytes`` bounds a
    request body as the API's :class:`~actors.http.middleware.BodyLimit` does."""

    def __init__(self, app: ASGIApp, service: JobService, secret: str, max_bytes: int) -> None:
        self.app = app
        self.ui: ASGIApp = BodyLimit(create_ui(service, secret), max_bytes=max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers + _HEADERS
            await send(message)

        await self.ui(scope, receive, with_headers)


def create_ui(service: JobService, secret: str) -> FastAPI:
    """The dashboard's app over ``service`` (which its caller starts and stops)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.state.session = Session(secret)
    app.state.pages = _LazyPages(app.state.session, service)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=_STATIC), name="static")
    for router in ROUTERS:
        app.include_router(router, prefix=PREFIX)
    _add_handlers(app)
    return app


class _LazyPages(Pages):
    """Pages whose node name is read when the first page renders (the service may
    start after the app is built)."""

    def __init__(self, session: Session, service: JobService) -> None:
        super().__init__(session, "")
        self._service = service

    def render(self, request: Request, name: str, status_code: int = 200, **context: Any) -> Any:
        if not self.node_name:
            try:
                self.node_name = self._service.node_name
            except AttributeError:
                self.node_name = ""
        return super().render(request, name, status_code, **context)


def _add_handlers(app: FastAPI) -> None:
    def pages(request: Request) -> Pages:
        found: Pages = request.app.state.pages
        return found

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if request.headers.get("x-fragment"):
            return PlainTextResponse("log in again", status_code=401)
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        login = f"{PREFIX}/login"
        if request.method == "GET" and target not in (PREFIX, PREFIX + "/"):
            from urllib.parse import quote

            login += "?next=" + quote(target, safe="")
        return RedirectResponse(login, status_code=303)

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, exc: CsrfRefused) -> Response:
        return _problem(
            pages(request),
            request,
            403,
            "This form is out of date or did not come from this dashboard "
            "(its CSRF token is missing or wrong). Go back, reload the page and try again.",
        )

    @app.exception_handler(JobServiceError)
    async def refused(request: Request, exc: Exception) -> Response:
        return _problem(pages(request), request, _status(exc), str(exc))


def _status(exc: Exception) -> int:
    """The API's status for ``exc`` (:data:`~actors.http.errors.ANSWERS`); 502 for a
    registry that failed."""
    if isinstance(exc, RegistryError):
        return 502
    for cls in type(exc).__mro__:
        answer = ANSWERS.get(cls)
        if answer is not None and answer.status is not None:
            return answer.status
    return 500


def _problem(pages: Pages, request: Request, status: int, message: str) -> Response:
    if request.headers.get("x-fragment"):
        return PlainTextResponse(message, status_code=status)
    return pages.render(request, "problem.html", status, status=status, message=message)
