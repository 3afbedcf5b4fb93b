"""The scan workflow: find vulnerable packages in an image."""

from __future__ import annotations

from model.errors import JobServiceError
from model.sm import SM, Job
from model.status import Status

__all__ = ["add_transitions"]


class _NotImplemented:
    def __init__(self, job: Job) -> None:
        self.job = job

    def enter(self) -> str:
        raise JobServiceError(f"{self.job.type} jobs are not implemented yet")

    def exit(self) -> None:
        return None


def add_transitions(sm: SM, job: Job) -> None:
    """Adds the scan states to ``sm``."""
    sm.add_transition(Status.RUNNING, "initialize", _NotImplemented(job))
