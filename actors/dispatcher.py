"""The dispatcher: the root of the actor tree, the one timer of retries and schedules,
and this node's clock (heartbeats, polls) and ear (other nodes' notifications)."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import datetime
from typing import Any

import pykka
from loguru import logger

from actors.base import Clock, Runtime, ServiceActor, ask
from actors.handoff import HandoffSlots
from actors.messages import (
    Beat,
    FireDue,
    GetPools,
    Notified,
    Poll,
    Pools,
    PoolStats,
    PoolStatus,
    Reschedule,
    Schedule,
    StopRequested,
    Tick,
    Wake,
)
from actors.pool import WorkerPool
from actors.scheduler import Scheduler
from model.db.listen import Listener
from model.db.tables import utcnow

__all__ = ["Dispatcher"]

_POOL_STOP_TIMEOUT_S = 15.0
#: Seconds the dispatcher waits for a pool's load at a beat.
_POOL_STATS_TIMEOUT_S = 2.0


class Dispatcher(ServiceActor):
    """Starts one :class:`WorkerPool` per kind and routes to them.

    ``Schedule`` wakes the kind's pool; ``Reschedule`` arms the one timer for the
    earliest retry or schedule, whose ``Tick`` wakes every pool and tells the
    :class:`~actors.scheduler.Scheduler` to fire what is due. Never a thread or timer
    per job or schedule: due times live in the database, and the timer is re-armed
    from it.

    With other nodes on the database: its clock's ``Beat`` records this node's
    heartbeat and takes over dead nodes' jobs; ``Poll`` wakes every pool, re-arms the
    retry timer from the database (retries written by other nodes) and routes stops
    asked on other nodes; on PostgreSQL, ``Notified`` brings other nodes' submits and
    stops at once.
    """

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        self.ctx = runtime.jobs
        self.pools: dict[str, pykka.ActorRef[Any]] = {}
        self.slots: dict[str, HandoffSlots] = {}
        self._timer: threading.Timer | None = None
        self._timer_due: datetime | None = None
        self._clock: Clock | None = None
        self._listener: Listener | None = None
        self._scheduler: pykka.ActorRef[Any] | None = None

    def on_start(self) -> None:
        """Runs in the dispatcher's thread: starts the pools, arms the retry timer."""
        for kind in self.runtime.kinds:
            slots = self.slots[kind.name] = HandoffSlots()
            self.pools[kind.name] = WorkerPool.start(
                kind, kind.size(self.ctx.settings), self.runtime, self.actor_ref, slots
            )
        self._scheduler = Scheduler.start(self.runtime, self.actor_ref)
        self._scheduler.tell(FireDue())  # a run missed while no node ran fires now, once
        self._arm_from_store()
        settings = self.ctx.settings
        self._clock = Clock(
            self.actor_ref,
            {Beat(): settings.heartbeat_interval, Poll(): settings.poll_interval},
            "jobservice-clock",
        ).start()
        if not self.ctx.store.url.startswith("sqlite"):
            self._listener = Listener(
                self.ctx.store.url,
                on_payload=lambda payload: self.actor_ref.tell(Notified(payload)),
                on_connect=lambda: self.actor_ref.tell(Poll()),
                node=lambda: self.runtime.node.id,
            ).start()

    def on_stop(self) -> None:
        """Runs in the dispatcher's thread: stops the clock, the listener and the timer,
        then the pools."""
        if self._clock is not None:
            self._clock.stop()
        if self._listener is not None:
            self._listener.stop()
        self._cancel_timer()
        if self._scheduler is not None:
            self._scheduler.stop(block=False)
        # A stop's future answers once the pool's on_stop is over (its last writes
        # made); ``actor_stopped`` is set before on_stop begins.
        stops = [ref.stop(block=False) for ref in self.pools.values()]
        deadline = time.monotonic() + _POOL_STOP_TIMEOUT_S
        for stop in stops:
            with contextlib.suppress(pykka.Timeout):
                stop.get(timeout=max(deadline - time.monotonic(), 0.0))

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
                self._fire_due()
                self._arm_from_store()
            case Notified(payload=payload):
                self._notified(payload)
            case Poll():
                self._poll()
            case Beat():
                self._beat()
            case GetPools():
                return Pools(dict(self.pools), dict(self.slots))
            case _:
                logger.warning("dispatcher: unknown message {!r}", message)
        return None

    def _notified(self, payload: str) -> None:
        match payload.split(" "):
            case ["wake", kind, node, *rest] if node != str(self.runtime.node.id):
                pass_on = rest == ["pass"]
                if kind in self.pools:
                    self.pools[kind].tell(Wake(pass_on=pass_on))
                elif pass_on:  # sent here alone, for a kind this node does not run
                    self.runtime.node.wake_others(kind)
            case ["stop", kind, job_id] if kind in self.pools and job_id.isdigit():
                self.pools[kind].tell(StopRequested(int(job_id)))
            case _:
                logger.debug("dispatcher: notification {!r} ignored", payload)

    def _fire_due(self) -> None:
        if self._scheduler is not None:
            self._scheduler.tell(FireDue())

    def _poll(self) -> None:
        for pool in self.pools.values():
            pool.tell(Wake(look_first=True))
        self._fire_due()
        self._arm_from_store()
        node = self.runtime.node.id
        if node is None:
            return
        try:
            requests = self.ctx.store.nodes.stop_requests(node)
        except Exception as exc:
            logger.warning("dispatcher: cannot read stop requests: {}", exc)
            return
        for table, job_id, kind in requests:
            found = self._pool_of(table, kind)
            if found is not None:
                found.tell(StopRequested(job_id))

    def _pool_of(self, table: str, kind: str | None) -> pykka.ActorRef[Any] | None:
        found = self.runtime.kinds.of_row(table, kind)
        return None if found is None else self.pools.get(found.name)

    def _beat(self) -> None:
        loads: dict[str, Any] = {}
        for name, pool in self.pools.items():
            try:
                status = ask(pool, PoolStats(), PoolStatus, _POOL_STATS_TIMEOUT_S)
            except (pykka.ActorDeadError, pykka.Timeout):
                continue
            loads[name] = {"size": status.size, "busy": status.busy}
        try:
            taken = self.runtime.node.beat(loads)
        except Exception as exc:
            logger.warning("dispatcher: heartbeat failed: {}; beating again", exc)
            return
        if taken:
            tables = {job.table for job in taken}
            for kind in self.runtime.kinds:
                if kind.table in tables:
                    self.pools[kind.name].tell(Wake())

    def _arm_from_store(self) -> None:
        """Arms the timer for the earliest retry or schedule still to come (those due
        already are the pools' and the scheduler's at once)."""
        try:
            due = self.ctx.store.next_due(after=utcnow())
        except Exception as exc:
            logger.opt(exception=exc).error("dispatcher: cannot read due times: {}", exc)
            return
        if due is not None:
            self._arm(due)

    def _arm(self, due: datetime) -> None:
        if self._timer_due is not None and self._timer_due <= due:
            return
        self._cancel_timer()
        delay = max(0.0, (due - utcnow()).total_seconds())
        timer = threading.Timer(delay, _tell, args=(self.actor_ref, Tick()))
        timer.daemon = True
        timer.name = "jobservice-timer"
        self._timer, self._timer_due = timer, due
        timer.start()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_due = None, None


def _tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    # From the timer's thread: the dispatcher may have stopped meanwhile.
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(message)
