"""Login and logout."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from actors.http.ui._deps import FormDep, PagesDep, SessionDep, logged_in
from actors.http.ui._render import redirect

__all__ = ["router"]

router = APIRouter()

#: What a wrong secret is told: no hint of how close it was.
WRONG_SECRET = "That secret is wrong."


@router.get("/login")
def login_page(request: Request, pages: PagesDep, next: str = "") -> Response:
    """The login form."""
    return pages.render(request, "login.html", error="", next=_local(next))


@router.post("/login")
def log_in(request: Request, pages: PagesDep, session: SessionDep, form: FormDep) -> Response:
    """Sets the ``secret`` cookie when the secret given is right."""
    target = _local(form.get("next"))
    if not session.is_secret(form.raw("secret")):
        return pages.render(request, "login.html", 401, error=WRONG_SECRET, next=target)
    response = redirect(target or "/ui/")
    session.log_in(request, response)
    return response


@router.post("/logout", dependencies=[Depends(logged_in)])
def log_out(request: Request, session: SessionDep, form: FormDep) -> Response:
    """Clears the cookies."""
    response = redirect("/ui/login", done="logout")
    session.log_out(request, response)
    return response


def _local(target: str) -> str:
    """``target`` when it is a dashboard path (never another site), else ""."""
    if target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return ""
