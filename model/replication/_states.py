"""State names of the replication workflows and the two handler shapes they use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

from model.sm import SM, StateHandler
from model.status import Status

__all__ = [
    "CHECK",
    "DELETE",
    "ENDING_STATES",
    "INITIALIZE",
    "PULL_MANIFEST",
    "PUSH_MANIFEST",
    "TRANSFER_BLOB",
    "Ending",
    "Work",
    "release_on_endings",
]

INITIALIZE = "initialize"  #: open the registry clients, list the tags to transfer
CHECK = "check"  #: the target answers /v2/ and lets the credentials push
PULL_MANIFEST = "pull_manifest"  #: read the next tag's manifests, find the missing blobs
TRANSFER_BLOB = "transfer_blob"  #: one bounded step of the current blob (self-loop)
PUSH_MANIFEST = "push_manifest"  #: store the tag's manifests, children first
DELETE = "delete"  #: delete the job's tags on the target, by digest

#: States in which a job run ends or is suspended: each releases the run's resources.
ENDING_STATES = (
    Status.FINISHED,
    Status.ERROR,
    Status.STOPPED,
    Status.CANCELED,
    Status.RETRYING,
)


@dataclass(frozen=True)
class Work:
    """A state whose work is one call: ``enter`` returns what ``work`` returns.

    ``exit`` does nothing: the machine calls it on every transition, a self-loop's
    included, so resources that live across transitions (an upload session between
    two steps of a blob) are released by the :class:`Ending` states instead.
    """

    work: Callable[[], str]

    def enter(self) -> str:
        return self.work()

    def exit(self) -> None:
        return None


@dataclass(frozen=True)
class Ending:
    """Wraps the handler of a state that ends or suspends a job run (finished, stopped,
    error, canceled, retrying): calls ``release(state)`` first, so open upload sessions
    are cancelled and connections closed, then the wrapped handler. A failing release
    is logged and never keeps the job from its state."""

    inner: StateHandler
    state: str
    release: Callable[[str], None]

    def enter(self) -> str:
        try:
            self.release(self.state)
        except Exception as exc:
            logger.opt(exception=exc).error("releasing a replication run failed: {}", exc)
        return self.inner.enter()

    def exit(self) -> None:
        self.inner.exit()


def release_on_endings(sm: SM, release: Callable[[str], None]) -> None:
    """Wraps the handlers of the ending states already in ``sm`` with :class:`Ending`."""
    for state in ENDING_STATES:
        handler = sm.handlers.get(state)
        if handler is not None and not isinstance(handler, Ending):
            sm.handlers[state] = Ending(handler, state, release)
