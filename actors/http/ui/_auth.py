"""The dashboard's session: the ``secret`` cookie the whole HTTP API wants, set by the
login page, and the CSRF token every form that changes something carries.

CSRF, double-submit: a random value lives in the cookie :data:`CSRF_COOKIE` (HttpOnly,
SameSite=Strict), and each form carries ``HMAC-SHA256(secret, value)`` in its field
:data:`CSRF_FIELD`. Another site can neither read the cookie nor compute the HMAC
without the secret; the page never holds the secret itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "SECRET_COOKIE",
    "Session",
]

#: The cookie the HTTP API checks (see :class:`~actors.http.middleware.SecretCookieAuth`).
SECRET_COOKIE = "secret"
#: The cookie holding this browser's random CSRF value.
CSRF_COOKIE = "ui_csrf"
#: The form field holding the CSRF token.
CSRF_FIELD = "csrf"
#: Seconds the login lasts in the browser.
LOGIN_MAX_AGE_S = 12 * 3600


class Session:
    """Checks and sets the dashboard's cookies for the service's ``secret``."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def logged_in(self, request: Request) -> bool:
        """Whether the request carries the right ``secret`` cookie (compared in
        constant time)."""
        given = request.cookies.get(SECRET_COOKIE)
        return given is not None and self.is_secret(given)

    def is_secret(self, given: str) -> bool:
        """Whether ``given`` is the secret (compared in constant time)."""
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._secret)

    def log_in(self, request: Request, response: Response) -> None:
        """Sets the ``secret`` cookie on ``response``: HttpOnly, SameSite=Strict, and
        Secure when the page is served over https."""
        response.set_cookie(
            SECRET_COOKIE,
            self._secret.decode(),
            max_age=LOGIN_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=_https(request),
        )

    def log_out(self, request: Request, response: Response) -> None:
        """Deletes both cookies."""
        secure = _https(request)
        response.delete_cookie(
            SECRET_COOKIE, path="/", httponly=True, samesite="strict", secure=secure
        )
        response.delete_cookie(CSRF_COOKIE, path="/ui", httponly=True, samesite="strict")

    # -- CSRF ----------------------------------------------------------------------------

    def csrf_value(self, request: Request) -> tuple[str, bool]:
        """This browser's CSRF value, and whether it is new (then :meth:`keep_csrf`
        must set it on the answer)."""
        value = request.cookies.get(CSRF_COOKIE)
        if value and len(value) <= 128:
            return value, False
        return secrets.token_urlsafe(24), True

    def keep_csrf(self, request: Request, response: Response, value: str) -> None:
        """Sets the CSRF cookie ``value`` on ``response``."""
        response.set_cookie(
            CSRF_COOKIE,
            value,
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=_https(request),
        )

    def csrf_token(self, value: str) -> str:
        """The token forms carry for the CSRF ``value``."""
        return hmac.new(self._secret, b"csrf:" + value.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, request: Request, token: str | None) -> bool:
        """Whether ``token`` (a form's) matches this browser's CSRF cookie."""
        value = request.cookies.get(CSRF_COOKIE)
        if not value or not token:
            return False
        return hmac.compare_digest(self.csrf_token(value), token)


def _https(request: Request) -> bool:
    return request.url.scheme == "https"
