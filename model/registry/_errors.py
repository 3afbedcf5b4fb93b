"""The registry client's errors and the mapping from an HTTP answer to one of them."""

from __future__ import annotations

import email.utils
import json
import time
from typing import TypedDict, Unpack

import httpx

from model.errors import JobServiceError, RetryableError, StopRequested
from model.net import stop_requested

__all__ = [
    "DigestMismatchError",
    "InvalidManifestError",
    "RegistryAuthError",
    "RegistryAuthExpiredError",
    "RegistryContentError",
    "RegistryError",
    "RegistryNotFoundError",
    "RegistryStopRequested",
    "RegistryUnavailableError",
    "error_from_response",
    "error_from_transport",
    "parse_retry_after",
]


class _Where(TypedDict, total=False):
    """What a :class:`RegistryError` names besides the registry (see there)."""

    repository: str | None
    reference: str | None
    status: int | None
    code: str | None
    detail: str | None


class RegistryError(JobServiceError):
    """A registry refused a request, or sent content that failed a check.

    ``registry`` is the registry's base URL, ``repository`` and ``reference`` (a tag or
    a digest) name the object, ``status`` is the HTTP status (``None`` when no answer
    came), ``code`` the registry's error code (``errors[0].code`` of its JSON body, e.g.
    ``MANIFEST_UNKNOWN``). The message says what failed where; it never holds a
    password or a token.
    """

    def __init__(
        self,
        what: str,
        *,
        registry: str,
        repository: str | None = None,
        reference: str | None = None,
        status: int | None = None,
        code: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.what = what
        self.registry = registry
        self.repository = repository
        self.reference = reference
        self.status = status
        self.code = code
        self.detail = detail
        super().__init__(self._describe())

    @property
    def digest(self) -> str | None:
        """The reference when it is a digest (``algorithm:hex``), else ``None``."""
        if self.reference is not None and ":" in self.reference:
            return self.reference
        return None

    def _describe(self) -> str:
        where = ""
        if self.repository is not None:
            where = self.repository
            if self.reference is not None:
                where += ("@" if ":" in self.reference else ":") + self.reference
            where = " " + where
        text = f"{self.what}{where} at {self.registry}"
        if self.status is not None:
            text += f": HTTP {self.status}"
            if self.code:
                text += f" {self.code}"
        if self.detail:
            text += f": {self.detail}"
        return text


class RegistryAuthError(RegistryError):
    """The registry (or its token server) refused the credentials: HTTP 401 or 403."""


class RegistryAuthExpiredError(RegistryAuthError, RetryableError):
    """The registry answered 401 to a request whose body was streamed (an upload chunk
    read from a source as it went), so the body cannot be sent again with the fresh
    credentials the challenge gave: the token had expired or was revoked on the way,
    or the request went out before the client knew the registry wants credentials.

    Retryable: the fresh credentials are cached, so a new try (a new upload) carries
    them from its first request.
    """


class RegistryNotFoundError(RegistryError):
    """The repository, manifest, blob or upload session does not exist: HTTP 404."""


class RegistryContentError(RegistryError):
    """Content is invalid: a manifest that does not parse, or a digest that does not match."""


class InvalidManifestError(RegistryContentError):
    """A manifest is not a JSON document of a known type, or lacks required fields."""


class DigestMismatchError(RegistryContentError):
    """Bytes read or stored do not hash to the digest they were asked for under.

    ``expected`` and ``actual`` are the two digests.
    """

    def __init__(
        self,
        what: str,
        *,
        registry: str,
        repository: str | None,
        expected: str,
        actual: str,
    ) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            what,
            registry=registry,
            repository=repository,
            reference=expected,
            detail=f"content has digest {actual}",
        )


class RegistryUnavailableError(RegistryError, RetryableError):
    """The registry could not be reached, failed (5xx) or asked to slow down (429).

    Retryable: ``retry_after`` is the delay in seconds the registry asked for, if any.
    """

    def __init__(
        self,
        what: str,
        *,
        registry: str,
        retry_after: float | None = None,
        **where: Unpack[_Where],
    ) -> None:
        self.retry_after = retry_after
        super().__init__(what, registry=registry, **where)
        # RetryableError.__init__ ran through the cooperative super() chain with no delay.
        self.retry_after = retry_after

    def _describe(self) -> str:
        text = super()._describe()
        if self.retry_after is not None:
            text += f" (retry after {self.retry_after:g} s)"
        return text


class RegistryStopRequested(RegistryError, StopRequested):
    """A request was cut short, or refused before it started, because a stop of the
    calling worker's job (``job_id``) was requested. A :class:`RegistryError` too, so
    best-effort cleanups that swallow registry failures swallow this one as well; not
    retryable."""

    def __init__(
        self,
        what: str,
        *,
        registry: str,
        repository: str | None = None,
        reference: str | None = None,
        job_id: int | None = None,
    ) -> None:
        super().__init__(
            what,
            registry=registry,
            repository=repository,
            reference=reference,
            detail=f"stop of job {job_id} requested",
        )
        # StopRequested.__init__ ran through the cooperative super() chain with the
        # message as its job id.
        self.job_id = job_id
        self.args = (self._describe(),)


_CONTENT_CODES = frozenset(
    {"DIGEST_INVALID", "MANIFEST_INVALID", "MANIFEST_UNVERIFIED", "SIZE_INVALID"}
)


def _error_body(response: httpx.Response) -> tuple[str | None, str | None]:
    """``(code, message)`` of the first entry of a registry's JSON error body, if any."""
    try:
        body = json.loads(response.content) if response.content else None
    except (ValueError, httpx.ResponseNotRead):
        return None, None
    if not isinstance(body, dict):
        return None, None
    errors = body.get("errors")
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None, None
    code, message = errors[0].get("code"), errors[0].get("message")
    return (
        code if isinstance(code, str) else None,
        message if isinstance(message, str) else None,
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delay seconds or an HTTP date), or ``None``."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_response(
    response: httpx.Response,
    what: str,
    *,
    registry: str,
    repository: str | None = None,
    reference: str | None = None,
) -> RegistryError:
    """The error for a refused request; the response body must have been read.

    401/403 give :class:`RegistryAuthError`, 404 :class:`RegistryNotFoundError`, 429 and
    5xx the retryable :class:`RegistryUnavailableError` (with ``Retry-After``), a 400
    about content :class:`RegistryContentError`, anything else :class:`RegistryError`.
    """
    status = response.status_code
    code, message = _error_body(response)
    if message is None and status >= 500:
        message = response.reason_phrase or None

    def make(cls: type[RegistryError]) -> RegistryError:
        return cls(
            what,
            registry=registry,
            repository=repository,
            reference=reference,
            status=status,
            code=code,
            detail=message,
        )

    if status in (401, 403):
        return make(RegistryAuthError)
    if status == 404:
        return make(RegistryNotFoundError)
    if status == 429 or status >= 500:
        return RegistryUnavailableError(
            what,
            registry=registry,
            repository=repository,
            reference=reference,
            status=status,
            code=code,
            detail=message,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    if code in _CONTENT_CODES:
        return make(RegistryContentError)
    return make(RegistryError)


def error_from_transport(
    exc: httpx.TransportError,
    what: str,
    *,
    registry: str,
    repository: str | None = None,
    reference: str | None = None,
) -> RegistryUnavailableError | RegistryStopRequested:
    """The error for a request that got no (complete) answer: the retryable
    :class:`RegistryUnavailableError`, or :class:`RegistryStopRequested` when a stop of
    the calling worker's job was requested (the stop made the request fail)."""
    interrupt = stop_requested()
    if interrupt is not None:
        return RegistryStopRequested(
            what,
            registry=registry,
            repository=repository,
            reference=reference,
            job_id=interrupt.job_id,
        )
    reason = str(exc) or type(exc).__name__
    return RegistryUnavailableError(
        what,
        registry=registry,
        repository=repository,
        reference=reference,
        detail=f"{type(exc).__name__}: {reason}",
    )
