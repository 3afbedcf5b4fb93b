"""The one error tree of the product: every failure a caller can act on is a subclass
of :class:`JobServiceError` and carries the data that names what went wrong."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecryptionError",
    "InvalidRequest",
    "JobServiceError",
    "NotFound",
    "RetryableError",
    "ServiceNotRunning",
    "StatusConflict",
    "StopRequested",
    "TransitionError",
    "UnknownKind",
    "WaitTimeout",
]


class JobServiceError(Exception):
    """Base of every error this product raises on purpose."""


class RetryableError(JobServiceError):
    """A failure that may pass when tried again later (network, 5xx, 429).

    A job whose handler raises one enters ``retrying`` instead of ``error``.
    ``retry_after`` is the delay in seconds the far side asked for, if any.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, progress: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        #: The failed attempt moved the job forward (bytes or blobs landed that the next
        #: attempt skips): the retry does not count against ``max_retries``.
        self.progress = progress


class ConfigError(JobServiceError):
    """A setting is invalid; the message names the setting."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"setting {setting!r}: {problem}")
        self.setting = setting


class DecryptionError(JobServiceError):
    """A secret cannot be decrypted with the configured key."""


class InvalidRequest(JobServiceError):
    """A request is malformed; ``field`` names the offending input."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class UnknownKind(InvalidRequest):
    """No job kind of that name is registered."""

    def __init__(self, kind: str, known: list[str]) -> None:
        super().__init__("kind", f"unknown job kind {kind!r} (known: {', '.join(known)})")
        self.kind = kind


class NotFound(JobServiceError):
    """A row the request refers to does not exist (``what`` and ``ident`` name it;
    ``field``, when known, the input that named it)."""

    def __init__(self, what: str, ident: object, *, field: str | None = None) -> None:
        super().__init__(f"{what} {ident} not found")
        self.what = what
        self.ident = ident
        self.field = field


class StatusConflict(JobServiceError):
    """A guarded status change matched no row: the job was not in an allowed status."""

    def __init__(self, table: str, job_id: int, status: str, current: str | None) -> None:
        super().__init__(
            f"{table} {job_id}: cannot set status {str(status)!r} from {current!r}"
            if current is not None
            else f"{table} {job_id}: no such job"
        )
        self.table = table
        self.job_id = job_id
        self.status = status
        self.current = current


class TransitionError(JobServiceError):
    """The state machine was asked for a transition its table does not have."""

    def __init__(self, job: object, source: str, target: str, detail: str = "") -> None:
        super().__init__(
            f"job {job}: no transition from {str(source)!r} to {str(target)!r}"
            + (f" ({detail})" if detail else "")
        )
        self.source = source
        self.target = target


class WaitTimeout(JobServiceError):
    """``JobService.wait`` reached its deadline before the job ended."""

    def __init__(self, kind: str, job_id: int, status: str, timeout: float) -> None:
        super().__init__(f"{kind} job {job_id} still {status!r} after {timeout} s")
        self.kind = kind
        self.job_id = job_id
        self.status = status


class ServiceNotRunning(JobServiceError):
    """The job service was asked for work while it is not started or shutting down."""


class StopRequested(JobServiceError):
    """A step gave up because a stop of its job was requested (``job_id``)."""

    def __init__(self, job_id: int | None) -> None:
        super().__init__(f"job {job_id}: stop requested")
        self.job_id = job_id
