"""The dispatcher: the root of the actor tree, and the one timer of retries."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import pykka
from loguru import logger

from actors.base import Runtime, ServiceActor
from actors.messages import GetPools, Pools, Reschedule, Schedule, Tick, Wake
from actors.pool import WorkerPool
from model.db.tables import utcnow

__all__ = ["Dispatcher"]

_POOL_STOP_TIMEOUT_S = 15.0


class Dispatcher(ServiceActor):
    """Starts one :class:`WorkerPool` per kind and routes to them.

    ``Schedule`` wakes the kind's pool; ``Reschedule`` arms the one timer for the
    earliest retry, whose ``Tick`` wakes every pool. Never a thread or timer per job:
    due times live in the database, and the timer is re-armed from it.
    """

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        self.ctx = runtime.jobs
        self.pools: dict[str, pykka.ActorRef[Any]] = {}
        self._timer: threading.Timer | None = None
        self._timer_due: datetime | None = None

    def on_start(self) -> None:
        """Runs in the dispatcher's thread: starts the pools, arms the retry timer."""
        for kind in self.runtime.kinds:
            self.pools[kind.name] = WorkerPool.start(
                kind, kind.size(self.ctx.settings), self.runtime, self.actor_ref
            )
        self._arm_from_store()

    def on_stop(self) -> None:
        """Runs in the dispatcher's thread: cancels the timer, stops the pools."""
        self._cancel_timer()
        for ref in self.pools.values():
            ref.stop(block=False)
        for ref in self.pools.values():
            ref.actor_stopped.wait(_POOL_STOP_TIMEOUT_S)

    def on_receive(self, message: Any) -> Any:
        """Runs in the dispatcher's thread."""
        match message:
            case Schedule(kind=kind):
                self.pools[kind].tell(Wake())
            case Reschedule(due=due):
                self._arm(due)
            case Tick():
                self._timer, self._timer_due = None, None
                for pool in self.pools.values():
                    pool.tell(Wake())
                self._arm_from_store()
            case GetPools():
                return Pools(dict(self.pools))
            case _:
                logger.warning("dispatcher: unknown message {!r}", message)
        return None

    def _arm_from_store(self) -> None:
        try:
            due = self.ctx.store.earliest_retry(after=utcnow())
        except Exception as exc:
            logger.opt(exception=exc).error("dispatcher: cannot read retry times: {}", exc)
            return
        if due is not None:
            self._arm(due)

    def _arm(self, due: datetime) -> None:
        if self._timer_due is not None and self._timer_due <= due:
            return
        self._cancel_timer()
        delay = max(0.0, (due - utcnow()).total_seconds())
        timer = threading.Timer(delay, self.actor_ref.tell, args=(Tick(),))
        timer.daemon = True
        timer.name = "jobservice-retry-timer"
        self._timer, self._timer_due = timer, due
        timer.start()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_due = None, None
