"""Requests to a scanner server (a Harbor scanner adapter, Clair), with its failures
turned into :class:`ScannerUnavailable` (retryable) or :class:`ScannerFailed`."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

import httpx

from model.errors import StopRequested
from model.net import stop_requested, timeouts
from model.scan._errors import ScannerFailed, ScannerUnavailable
from model.scan._run import http_transport

__all__ = ["ScannerHttp", "error_message", "json_object"]

#: Longest error text quoted from a scanner's answer.
_MAX_MESSAGE = 500


def error_message(response: httpx.Response) -> str:
    """What a refusing server said: ``error.message`` (adapter), ``Error.Message``
    (Clair), else the start of the body, else the reason phrase."""
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key, inner in (("error", "message"), ("Error", "Message")):
            error = body.get(key)
            if isinstance(error, dict) and isinstance(error.get(inner), str):
                return str(error[inner])[:_MAX_MESSAGE]
    text = response.text.strip() if response.content else ""
    return (text or response.reason_phrase or "")[:_MAX_MESSAGE]


def json_object(response: httpx.Response, what: str, scanner: str, url: str) -> dict[str, Any]:
    """The response's JSON object; :class:`ScannerFailed` when it is none."""
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise ScannerFailed(scanner, url, f"{what}: answer is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ScannerFailed(scanner, url, f"{what}: answer is not a JSON object")
    return body


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class ScannerHttp:
    """An HTTP client of one scanner server at ``url``, opened on first use and closed by
    :meth:`close` (the next request opens it again). Not thread-safe: one per job."""

    def __init__(
        self, scanner: str, url: str, *, connect_timeout_s: float, read_timeout_s: float
    ) -> None:
        self.scanner = scanner
        self.url = url.rstrip("/")
        self._timeout = timeouts(connect_timeout_s, read_timeout_s)
        self._client: httpx.Client | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        expect: Collection[int],
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> httpx.Response:
        """Sends one request to ``url + path``; returns the answer when its status is in
        ``expect``. Raises :class:`ScannerUnavailable` when there is no answer, or a 5xx
        or 429 one, :class:`ScannerFailed` for any other status, and
        :class:`~model.errors.StopRequested` when a stop of the calling worker's job cut
        the request short (or came before it)."""
        if self._client is None:
            self._client = httpx.Client(
                transport=http_transport(),
                timeout=self._timeout,
                follow_redirects=False,
                headers={"User-Agent": "jobservice"},
            )
        sent = dict(headers or {})
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            sent["Content-Type"] = content_type
        try:
            response = self._client.request(
                method, self.url + path, headers=sent, params=params, content=content
            )
        except httpx.TransportError as exc:
            interrupt = stop_requested()
            if interrupt is not None:
                raise StopRequested(interrupt.job_id) from None
            raise ScannerUnavailable(
                self.scanner, self.url, f"{what}: {type(exc).__name__}: {exc}"
            ) from None
        status = response.status_code
        if status in expect:
            return response
        message = error_message(response)
        problem = f"{what}: HTTP {status}" + (f": {message}" if message else "")
        if status >= 500 or status == 429:
            raise ScannerUnavailable(
                self.scanner,
                self.url,
                problem,
                retry_after=_retry_after(response.headers.get("retry-after")),
            )
        raise ScannerFailed(self.scanner, self.url, problem)

    def close(self) -> None:
        """Closes the connections; idempotent."""
        client, self._client = self._client, None
        if client is not None:
            client.close()
