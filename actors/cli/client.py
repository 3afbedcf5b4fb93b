"""A client of the HTTP API (what the CLI's client commands use): JSON in and out, the
secret sent as the cookie the API wants, every failure one :class:`ApiError`."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

__all__ = ["DEFAULT_URL", "ApiClient", "ApiError"]

#: Where ``jobservice serve`` listens by default.
DEFAULT_URL = "http://127.0.0.1:8080"
#: Seconds a request may wait for a connection or the next bytes of an answer.
TIMEOUT_S = 30.0


class ApiError(Exception):
    """The API refused a request (``code`` is its HTTP status, ``field`` the input it
    named), or could not be reached (``code`` 0)."""

    def __init__(self, code: int, message: str, field: str | None = None) -> None:
        super().__init__(message if code == 0 else f"{message} (HTTP {code})")
        self.code = code
        self.message = message
        self.field = field


class ApiClient:
    """Talks to the jobservice at ``url`` with ``secret``; a context manager."""

    def __init__(self, url: str, secret: str, *, timeout: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, cookies={"secret": secret}, timeout=timeout, trust_env=False
        )

    def close(self) -> None:
        """Closes the connections; the client is not used afterwards."""
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """Sends one request; returns a 2xx answer, raises :class:`ApiError` otherwise."""
        try:
            response = self._http.request(method, path, json=json, params=params)
        except httpx.TransportError as exc:
            raise ApiError(0, f"cannot reach the jobservice at {self.url}: {exc}") from None
        if response.is_success:
            return response
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            field = body.get("field")
            raise ApiError(response.status_code, body["message"], field if field else None)
        raise ApiError(response.status_code, response.text.strip()[:500] or response.reason_phrase)

    def get(self, path: str, **params: Any) -> Any:
        """The decoded JSON answer of ``GET path?params``; raises :class:`ApiError`."""
        return self.request("GET", path, params=params or None).json()

    def post(self, path: str, body: Any = None) -> Any:
        """The decoded JSON answer of ``POST path`` with ``body`` as JSON (None for an
        empty answer); raises :class:`ApiError`."""
        response = self.request("POST", path, json=body)
        return response.json() if response.content else None

    def put(self, path: str, body: Any) -> Any:
        """The decoded JSON answer of ``PUT path`` with ``body``; raises :class:`ApiError`."""
        return self.request("PUT", path, json=body).json()

    def delete(self, path: str) -> None:
        """Sends ``DELETE path``; raises :class:`ApiError`."""
        self.request("DELETE", path)

    def log(self, kind: str, job_id: int, offset: int = 0) -> bytes:
        """The job's log from byte ``offset`` (empty when nothing new)."""
        return self.request(
            "GET", f"/api/jobs/{kind}/{job_id}/log", params={"offset": offset}
        ).content

    def nodes(self, every: bool = False) -> dict[str, Any]:
        """``GET /api/nodes``: the nodes sharing the service's database (``every``: the
        ended ones of more than an hour ago too) and the live ones' totals per kind."""
        answer: dict[str, Any] = self.get("/api/nodes", **({"all": "true"} if every else {}))
        return answer
