"""What one transfer run counts and logs at its end, and the mark its retryable
failures carry when it stored something."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from model.errors import RetryableError

if TYPE_CHECKING:
    from loguru import Logger

__all__ = ["TransferCounts", "marks_progress", "seconds_since"]


class _Landing(Protocol):
    #: Blobs and manifests the run stored on the target.
    landed: int


_Run = TypeVar("_Run", bound=_Landing)


def seconds_since(started: float) -> float:
    """Seconds since ``started`` (a ``time.monotonic()`` value)."""
    return time.monotonic() - started


def marks_progress(state: Callable[[_Run], str]) -> Callable[[_Run], str]:
    """A state whose retryable failure says whether the run stored anything (such a
    retry does not count against the job's ``max_retries``)."""

    @functools.wraps(state)
    def run(self: _Run) -> str:
        try:
            return state(self)
        except RetryableError as exc:
            if self.landed:
                exc.progress = True
            raise

    return run


@dataclass
class TransferCounts:
    tags_pushed: int = 0
    tags_skipped: int = 0
    blobs_sent: int = 0
    blobs_mounted: int = 0
    blobs_skipped: int = 0
    bytes_sent: int = 0
    manifests_pushed: int = 0

    def log_end(self, log: Logger, state: str, seconds: float) -> None:
        """The run's last line: what it did, entering ``state``."""
        log.info(
            "transfer {}: {} tag(s) pushed, {} skipped; {} blob(s) sent, {} mounted, "
            "{} skipped; {} bytes sent; {} manifest(s) pushed ({:.3f} s)",
            state,
            self.tags_pushed,
            self.tags_skipped,
            self.blobs_sent,
            self.blobs_mounted,
            self.blobs_skipped,
            self.bytes_sent,
            self.manifests_pushed,
            seconds,
        )
