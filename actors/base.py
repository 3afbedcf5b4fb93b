"""What every actor of the service shares: its base class, its context, and typed asks."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pykka

from model.jobs import JobContext
from model.kinds import KindRegistry
from model.sm import RetryPolicy

if TYPE_CHECKING:
    from actors.node import Membership

__all__ = ["Clock", "JobListener", "Runtime", "ServiceActor", "ask"]

_R = TypeVar("_R")

#: ``listener(kind, job_id, status)``: a worker let go of a job, or a waiting job was stopped.
JobListener = Callable[[str, int, str], None]


@dataclass(frozen=True)
class Runtime:
    """What every actor of one service needs, built once at start: the jobs' context
    (store, settings, secret box, log sink), the kinds, the retry policy, and who hears
    of each job that ends (called in pool threads)."""

    jobs: JobContext
    kinds: KindRegistry
    retry_policy: RetryPolicy
    on_job_end: JobListener
    #: This service's node among those sharing the database.
    node: Membership


class ServiceActor(pykka.ThreadingActor):
    """A pykka threading actor whose inbox is a :class:`queue.SimpleQueue`.

    pykka's inbox protocol is ``put``/``get``/``empty``; ``SimpleQueue`` implements it in
    C, where ``queue.Queue`` takes a Python-level condition per call. A no-op job
    crosses half a dozen inboxes, so this is a large share of what a message costs.

    Its thread is a daemon: a program that exits without ``JobService.shutdown`` is not
    held open by idle actors (the database is the queue: a job cut short runs again
    at the next start).
    """

    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> queue.SimpleQueue[Any]:
        return queue.SimpleQueue()


def ask(ref: pykka.ActorRef[Any], message: Any, reply: type[_R], timeout: float) -> _R:
    """Asks ``ref`` and returns its answer, checked to be a ``reply``; raises
    :class:`pykka.Timeout` after ``timeout`` seconds, :class:`pykka.ActorDeadError` when
    the actor is gone, :class:`TypeError` for an answer of another type."""
    answer = ref.ask(message, timeout=timeout)
    if not isinstance(answer, reply):
        raise TypeError(f"{message!r} answered {answer!r}, not a {reply.__name__}")
    return answer


class Clock:
    """One daemon thread that tells ``ref`` each message of ``every`` at its period
    (seconds): the periodic work of an actor, as messages in its own inbox."""

    def __init__(self, ref: pykka.ActorRef[Any], every: Mapping[Any, float], name: str) -> None:
        self._ref = ref
        self._every = dict(every)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Clock:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops the clock (a message already sent stays in the inbox)."""
        self._stopping.set()

    def _run(self) -> None:
        now = time.monotonic()
        due = {message: now + period for message, period in self._every.items()}
        while not self._stopping.wait(max(min(due.values()) - time.monotonic(), 0.0)):
            now = time.monotonic()
            for message, at in due.items():
                if at <= now:
                    with contextlib.suppress(pykka.ActorDeadError):
                        self._ref.tell(message)
                    period = self._every[message]
                    # Late (a slow machine): the next one a whole period from now.
                    due[message] = at + period if at + period > now else now + period
