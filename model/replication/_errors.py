"""Errors of replication jobs (the registry client's own errors are in
:mod:`model.registry`)."""

from __future__ import annotations

from model.errors import JobServiceError, RetryableError

__all__ = ["ReplicationError", "RunReleased", "TargetCheckError"]


class ReplicationError(JobServiceError):
    """A replication job cannot go on; the message says what to fix and where."""


class TargetCheckError(ReplicationError):
    """The target does not answer ``/v2/`` as a registry, or refuses the credentials or
    a push to the repository. ``target`` is its URL, ``status`` the HTTP status it
    answered (``None`` when there was no answer), ``code`` its error code."""

    def __init__(
        self, message: str, *, target: str, status: int | None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.target = target
        self.status = status
        self.code = code


class RunReleased(ReplicationError, RetryableError):
    """The service shut down and released a job run (upload sessions cancelled,
    clients given back) while its worker still held it; retryable: the next run starts
    over where the target stands."""
