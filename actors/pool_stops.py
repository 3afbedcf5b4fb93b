"""How a worker pool stops its jobs: the one a worker runs (its interrupt), one whose
last status is still to be written, one handed back or retrying meanwhile (on its
row), and one a submit hands a worker (see :mod:`actors.handoff`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from loguru import logger

from actors.base import JobListener
from actors.handoff import EARLY_STOP_KEPT_S, HandoffSlots
from model.interrupt import Interrupt
from model.jobs import JobContext, LastWrite
from model.kinds import JobKind
from model.status import Status

__all__ = ["PoolStops"]


class PoolStops:
    """The stopping part of :class:`~actors.pool.WorkerPool` (its thread only)."""

    kind: JobKind
    ctx: JobContext
    on_job_end: JobListener
    slots: HandoffSlots
    interrupts: dict[int, Interrupt]
    unwritten: dict[int, LastWrite]
    #: Jobs asked to stop after their worker let go of them, and when (monotonic).
    stop_after: dict[int, float]
    _write: Callable[[int, LastWrite], None]

    def _stop_job(self, job_id: int) -> bool:
        unwritten = self.unwritten.get(job_id)
        if unwritten is not None:
            self.unwritten[job_id] = self._stopped_instead(job_id, unwritten) or unwritten
            return True
        # Handed to a worker by a submit, or about to be (see actors.handoff): a stop
        # kept for the hand-over is requested then.
        slot = self.slots.stop(job_id)
        if slot is None:
            return False
        if not self.interrupts[slot].request(job_id):
            self._stop_after_let_go(job_id)
        return True

    def _stop_after_let_go(self, job_id: int) -> None:
        # The worker let go of the job: a retry it hands over becomes a stop. An end it
        # wrote itself stands, and the request is forgotten after a while.
        now = time.monotonic()
        self.stop_after = {
            job: at for job, at in self.stop_after.items() if now - at < EARLY_STOP_KEPT_S
        }
        self.stop_after[job_id] = now

    def _stop_waiting(self, job_id: int) -> None:
        # Asked on another node while the job ran here, it has moved on since (handed
        # back, retrying): the request recorded on its row stops it where it waits.
        try:
            stopped = self.ctx.store.stop_waiting(self.kind.table, id=job_id, stop_requested=True)
        except Exception as exc:
            logger.warning("{} pool: cannot stop job {}: {}", self.kind.name, job_id, exc)
            return
        if stopped:
            self.kind.make_job(self.ctx, job_id).logger.info(
                "state stopped (stop requested on another node)"
            )
            self.on_job_end(self.kind.name, job_id, Status.STOPPED)

    def _stopped_instead(self, job_id: int, write: LastWrite | None) -> LastWrite | None:
        # A stop that came as the job was being handed back wins over a retry.
        if write is None or write.status != Status.RETRYING:
            return write
        self.kind.make_job(self.ctx, job_id).logger.info(
            "state stopped (stop requested while retrying)"
        )
        return LastWrite(Status.STOPPED)

    def _stopped_before(self, job_id: int, row: Mapping[str, Any], when: str) -> None:
        self.kind.make_job(self.ctx, job_id, row).logger.info(
            "state stopped (stop requested {})", when
        )
        self._write(job_id, LastWrite(Status.STOPPED))
