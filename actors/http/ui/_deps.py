"""What the dashboard's routes take, declared once: the service, the catalog, the page
renderer, the login requirement, and a form whose CSRF token was checked."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import Depends, Request

from actors.http.ui._auth import CSRF_FIELD, Session
from actors.http.ui._render import Pages
from actors.service import JobService
from model.catalog import Catalog

__all__ = [
    "CatalogDep",
    "CsrfRefused",
    "Form",
    "FormDep",
    "LoginRequired",
    "PagesDep",
    "ServiceDep",
    "SessionDep",
    "logged_in",
]

#: Bytes of a form body the dashboard reads (the service's max_body_bytes bounds it too).
MAX_FORM_BYTES = 64 * 1024


class LoginRequired(Exception):
    """The request has no right ``secret`` cookie: pages go to the login page,
    live fragments get a 401."""


class CsrfRefused(Exception):
    """A form came without the CSRF token of this browser."""


class Form:
    """An ``application/x-www-form-urlencoded`` body: its fields by name."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def get(self, name: str, default: str = "") -> str:
        """The field's last value (trimmed), or ``default``."""
        values = [v for k, v in self._pairs if k == name]
        return values[-1].strip() if values else default

    def raw(self, name: str) -> str:
        """The field's last value as sent (passwords are not trimmed)."""
        values = [v for k, v in self._pairs if k == name]
        return values[-1] if values else ""

    def flag(self, name: str) -> bool:
        """Whether a checkbox ``name`` was ticked."""
        return any(k == name for k, _ in self._pairs)


async def _service(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service


async def _session(request: Request) -> Session:
    session: Session = request.app.state.session
    return session


async def _pages(request: Request) -> Pages:
    pages: Pages = request.app.state.pages
    return pages


ServiceDep = Annotated[JobService, Depends(_service)]
SessionDep = Annotated[Session, Depends(_session)]
PagesDep = Annotated[Pages, Depends(_pages)]


async def logged_in(request: Request, session: SessionDep) -> None:
    """Raises :class:`LoginRequired` unless the request carries the secret."""
    if not session.logged_in(request):
        raise LoginRequired()


async def _catalog(service: ServiceDep) -> Catalog:
    return Catalog(service.store, service.box)


CatalogDep = Annotated[Catalog, Depends(_catalog)]


async def _form(request: Request, session: SessionDep) -> Form:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise CsrfRefused()  # no form of ours is that large
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    form = Form(pairs)
    if not session.csrf_ok(request, form.raw(CSRF_FIELD)):
        raise CsrfRefused()
    return form


#: A posted form whose CSRF token matched (else :class:`CsrfRefused`).
FormDep = Annotated[Form, Depends(_form)]
