"""State names of the replication workflows and the two handler shapes they use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

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
    "Parking",
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


class Parking(Protocol):
    """A job run told when the machine enters and leaves its states (worker thread).

    Between two transitions the last call is ``resume``; ``park`` with no ``resume``
    after it means the worker let go of the run outside a transition: it handed the
    job back (a service shutting down) and nothing will release the run but its owner.
    """

    def resume(self) -> None: ...
    def park(self) -> None: ...


@dataclass(frozen=True)
class Work:
    """A state whose work is one call: ``enter`` returns what ``work`` returns.

    ``exit`` releases nothing: the machine calls it on every transition, a self-loop's
    included, so resources that live across transitions (an upload session between
    two steps of a blob) are released by the :class:`Ending` states instead. With a
    ``run``, ``enter`` and ``exit`` tell it :meth:`Parking.resume` and
    :meth:`Parking.park`.
    """

    work: Callable[[], str]
    run: Parking | None = None

    def enter(self) -> str:
        if self.run is not None:
            self.run.resume()
        return self.work()

    def exit(self) -> None:
        if self.run is not None:
            self.run.park()


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

    def ending(state: str, handler: StateHandler) -> StateHandler:
        return handler if isinstance(handler, Ending) else Ending(handler, state, release)

    sm.wrap_handlers(ENDING_STATES, ending)
