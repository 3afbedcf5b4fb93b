"""The HTTP exchanges with one registry: a request described once, sent with the
credentials the registry asks for, its answer checked against what the caller expects.

:class:`Session` is what :class:`~model.registry.RegistryClient` and the blob upload
and download code send through; :class:`Request` is one request to it. The scope
helpers name what a request needs of a repository (for a Bearer token's scope).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import KW_ONLY, dataclass

import httpx

from model.net import stop_exempt, stop_grace, stop_requested
from model.registry._auth import Authenticator
from model.registry._errors import (
    RegistryAuthError,
    RegistryAuthExpiredError,
    RegistryError,
    error_from_response,
    error_from_transport,
)

__all__ = [
    "AFTER_STOP_TIMEOUT_S",
    "Request",
    "Session",
    "delete_scopes",
    "pull_scopes",
    "push_scopes",
    "resolve_location",
]

#: Seconds the cancel of an upload session may take after a stop of the job (it goes out
#: despite the stop, which it must not hold up for long), and that a streamed body under
#: way may go on after a stop.
AFTER_STOP_TIMEOUT_S = 0.5


def pull_scopes(repository: str) -> frozenset[str]:
    """The scopes of a read of ``repository``."""
    return frozenset({f"repository:{repository}:pull"})


def push_scopes(repository: str) -> frozenset[str]:
    """The scopes of a write to ``repository`` (an upload, a manifest)."""
    return frozenset({f"repository:{repository}:pull,push"})


def delete_scopes(repository: str) -> frozenset[str]:
    """The scopes of a delete in ``repository``."""
    return frozenset({f"repository:{repository}:delete"})


def resolve_location(response: httpx.Response, fallback: str) -> str:
    """The absolute URL of a response's ``Location`` (a relative one resolved against
    the request's URL), ``fallback`` when there is none."""
    found = response.headers.get("location")
    if not found:
        return fallback
    return str(response.url.join(found))


@dataclass(frozen=True)
class Request:
    """One request to a registry, as :meth:`Session.send` takes it.

    ``url`` is absolute or a path below the registry's URL; ``what``, ``repository``
    and ``reference`` name the request in errors; ``scopes`` is what its credentials
    must allow; an answer whose status is not in ``expect`` is an error. ``content`` is
    bytes, or an iterator of chunks streamed as they come, for which ``content_length``
    (the exact total) is required. ``stream`` leaves the answer's body unread;
    ``timeout_s`` overrides the client's timeout.
    """

    method: str
    url: str
    _: KW_ONLY
    what: str
    scopes: frozenset[str]
    expect: tuple[int, ...]
    repository: str | None = None
    reference: str | None = None
    headers: Mapping[str, str] | None = None
    params: Mapping[str, str] | None = None
    content: bytes | Iterator[bytes] | None = None
    content_length: int | None = None
    stream: bool = False
    follow_redirects: bool = False
    timeout_s: float | None = None

    @property
    def streamed(self) -> bool:
        """Whether the body is an iterator (it can be sent only once)."""
        return self.content is not None and not isinstance(self.content, bytes)


def _once(data: bytes) -> Iterator[bytes]:
    """``data`` as a one-shot body. httpx keeps a request alive in a reference cycle
    with its response until the garbage collector runs; an exhausted generator holds
    no bytes, so big chunks are freed at once (memory stays bounded)."""
    yield data


class Session:
    """The connections and credentials of one registry client: sends :class:`Request`
    objects, authenticating as the registry asks (``auth``), through ``http`` (closed
    by :meth:`close`). ``url`` is the registry's base URL. Thread-safe, as its parts.
    """

    def __init__(self, url: str, http: httpx.Client, auth: Authenticator) -> None:
        self.url = url
        self.http = http
        self.auth = auth

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def send(self, request: Request) -> httpx.Response:
        """Send ``request`` and return the answer if its status is in
        ``request.expect``; raise the matching :class:`RegistryError` otherwise.

        A streamed body goes out once, with the credentials known up front: a 401 to it
        raises the retryable :class:`RegistryAuthExpiredError` when the challenge gave
        fresh credentials (cached for the next try), :class:`RegistryAuthError` when
        none would help.

        After a stop of the calling worker's job every request fails at once with
        :class:`RegistryStopRequested`, except a streamed body being sent or an upload
        session being opened, which may finish within :data:`AFTER_STOP_TIMEOUT_S`,
        and the ``DELETE`` of an upload session, which goes out with at most
        :data:`AFTER_STOP_TIMEOUT_S`.
        """
        if request.streamed and request.content_length is None:
            raise ValueError("a streamed body needs its content_length")
        url = request.url
        if not url.startswith(("http://", "https://")):
            url = self.url + url
        guard, timeout_s = self._stop_rules(request, url)
        with guard:
            response = self._exchange(request, url, timeout_s)
        if response.status_code in request.expect:
            return response
        raise self._rejected(request, response)

    def _stop_rules(
        self, request: Request, url: str
    ) -> tuple[AbstractContextManager[None], float | None]:
        """How a stop of the calling worker's job treats ``request``, and its timeout in
        seconds (None: the client's)."""
        timeout_s = request.timeout_s
        cleanup = (
            request.method == "DELETE" and "/blobs/uploads/" in url and stop_requested() is not None
        )
        if cleanup:
            # Cancelling an upload session releases what a stopped job holds on the
            # registry: it goes out despite the stop, briefly, so the stop still lands
            # within a second.
            timeout_s = min(timeout_s or AFTER_STOP_TIMEOUT_S, AFTER_STOP_TIMEOUT_S)
            return stop_exempt(), timeout_s
        if request.streamed or "/blobs/uploads/" in url:
            # A request that changes an upload session, cut halfway, leaves it in a
            # state nobody can clean up: a body cut halfway leaves the registry holding
            # its bytes under an address it no longer accepts, a session opened whose
            # answer is cut is one whose address nobody knows, and a commit cut while
            # the registry moves the blob can leave the session's data behind. A stop
            # lets such a request finish briefly; what it answers is then committed, or
            # cancelled at the address it names (a request begun after the stop still
            # fails at once).
            return stop_grace(AFTER_STOP_TIMEOUT_S), timeout_s
        return nullcontext(), timeout_s

    def _exchange(self, request: Request, url: str, timeout_s: float | None) -> httpx.Response:
        """The answer to ``request``, sent again once with the credentials a 401's
        challenge asked for (a streamed body is not sent again: see :meth:`send`)."""
        auth = self.auth.headers(request.scopes)
        for attempt in (1, 2):
            try:
                response = self.http.send(
                    self._build(request, url, auth, timeout_s),
                    stream=request.stream,
                    follow_redirects=request.follow_redirects,
                )
            except httpx.TransportError as exc:
                raise error_from_transport(
                    exc,
                    request.what,
                    registry=self.url,
                    repository=request.repository,
                    reference=request.reference,
                ) from None
            if response.status_code != 401 or attempt == 2:
                break
            response.close()
            retry = self.auth.answer(response, request.scopes)
            if retry is None:
                break
            if request.streamed:
                raise self._refused_stream(request, response, fresh=True)
            auth = retry
        return response

    def _build(
        self, request: Request, url: str, auth: Mapping[str, str], timeout_s: float | None
    ) -> httpx.Request:
        """The httpx request for ``request``, with ``auth`` headers."""
        content = request.content
        body = _once(content) if isinstance(content, bytes) and content else content
        length = request.content_length
        if length is None and isinstance(content, bytes):
            length = len(content)
        # An explicit Content-Length, so a one-shot or streamed body is not sent chunked.
        sized = {} if length is None else {"Content-Length": str(length)}
        return self.http.build_request(
            request.method,
            url,
            params=request.params,
            headers={**(request.headers or {}), **auth, **sized},
            content=body,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout_s is None else httpx.Timeout(timeout_s),
        )

    def _rejected(self, request: Request, response: httpx.Response) -> RegistryError:
        """The error for an answer ``request`` did not expect (its body read first)."""
        if response.status_code == 401:
            self.auth.forget(request.scopes)
        if request.stream:
            try:
                response.read()
            except (httpx.HTTPError, httpx.StreamError):
                pass
            finally:
                response.close()
        if request.streamed and response.status_code == 401:
            return self._refused_stream(request, response, fresh=False)
        return self._error(request, response)

    def _error(self, request: Request, response: httpx.Response) -> RegistryError:
        """The error :func:`error_from_response` makes of ``response``, naming
        ``request``."""
        return error_from_response(
            response,
            request.what,
            registry=self.url,
            repository=request.repository,
            reference=request.reference,
        )

    def _refused_stream(
        self, request: Request, response: httpx.Response, *, fresh: bool
    ) -> RegistryAuthError:
        """The error for a 401 to a streamed body (read already): retryable when
        ``fresh`` credentials were obtained for a next try."""
        refused = self._error(request, response)
        carried = "authorization" in response.request.headers
        why = (
            "the registry refused the credentials in the middle of a streamed upload"
            if carried
            else "the streamed upload went out without credentials (authenticate first, "
            "e.g. with the POST that opens the session)"
        )
        detail = "; ".join(
            part
            for part in (
                refused.detail,
                why,
                "its bytes cannot be sent again",
                "new credentials were obtained for a next try" if fresh else "",
            )
            if part
        )
        error_type = RegistryAuthExpiredError if fresh else RegistryAuthError
        return error_type(
            request.what,
            registry=self.url,
            repository=request.repository,
            reference=request.reference,
            status=response.status_code,
            code=refused.code,
            detail=detail,
        )
