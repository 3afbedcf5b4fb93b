"""The scheduler: fires the schedules whose time has come (see :mod:`model.schedules`).

An actor of its own, so that listing the source registry for a schedule's jobs never
holds up the dispatcher. It has no timer: the dispatcher's one timer tells it
:class:`FireDue` at the earliest fire time, and so does every poll (a schedule whose
time passed while no node ran, or that another node added).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pykka
from loguru import logger

from actors.base import Runtime, ServiceActor
from actors.messages import FireDue, Schedule
from model import schedules
from model.db.tables import Schedule as ScheduleRow
from model.db.tables import utcnow

__all__ = ["Scheduler"]

#: Seconds before a schedule whose firing failed (the source registry away) is tried
#: again; it stays due meanwhile, so its run is late, not lost.
FAILED_FIRE_BACKOFF_S = 30.0


class Scheduler(ServiceActor):
    """Fires due schedules, each in one guarded transaction with the jobs it queues,
    and wakes the pools of the kinds it queued through the dispatcher."""

    def __init__(self, runtime: Runtime, dispatcher: pykka.ActorRef[Any]) -> None:
        super().__init__()
        self.ctx = runtime.jobs
        self.dispatcher = dispatcher
        #: Schedules whose firing failed, by id: when to try again (monotonic).
        self.backoff: dict[int, float] = {}

    def on_receive(self, message: Any) -> Any:
        """Runs in the scheduler's thread."""
        match message:
            case FireDue():
                self._fire_due()
            case _:
                logger.warning("scheduler: unknown message {!r}", message)
        return None

    def _fire_due(self) -> None:
        now = utcnow()
        try:
            due = schedules.due(self.ctx.store, now)
        except Exception as exc:
            logger.warning("scheduler: cannot read the schedules: {}", exc)
            return
        for row in due:
            assert row.id is not None
            if self.backoff.get(row.id, 0.0) > time.monotonic():
                continue
            try:
                ids = schedules.fire(self.ctx.store, self.ctx.settings, row, now)
            except Exception as exc:
                self.backoff[row.id] = time.monotonic() + FAILED_FIRE_BACKOFF_S
                logger.error(
                    "{} could not fire: {}; trying again in {:.0f} s",
                    _name(row),
                    exc,
                    FAILED_FIRE_BACKOFF_S,
                )
                continue
            self.backoff.pop(row.id, None)
            if ids is None:
                continue  # another node fired this slot
            kind = "replication" if row.kind == "replication" else "scan"
            logger.info("{} fired: {} {} jobs queued {}", _name(row), len(ids), kind, ids)
            if ids:
                # Stopping with the service: the jobs are queued, the next start runs them.
                with contextlib.suppress(pykka.ActorDeadError):
                    self.dispatcher.tell(Schedule(kind))


def _name(row: ScheduleRow) -> str:
    what = f"policy {row.policy_id}" if row.kind == "replication" else f"scans of {row.pattern}"
    return f"schedule {row.id} ({what}, {row.cron!r} {row.timezone})"
