"""A worker pool: the workers of one job kind, and the claiming of that kind's jobs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pykka
from loguru import logger

from actors.base import ServiceActor
from actors.messages import Drain, Fill, PoolStats, Run, StopJob, Wake, WorkerDied, WorkerIdle
from actors.worker import Worker
from model.errors import StatusConflict
from model.jobs import JobContext
from model.kinds import JobKind
from model.sm import RetryPolicy
from model.status import Status

__all__ = ["WorkerPool"]

_WORKER_STOP_TIMEOUT_S = 10.0


class WorkerPool(ServiceActor):
    """Owns ``size`` workers of one kind and knows which runs which job.

    The database is the queue: whenever a worker is idle the pool claims the oldest due
    job of its kind (one guarded UPDATE), so it never runs more jobs than it has
    workers and never runs a stopped job. A worker that dies is replaced.
    """

    def __init__(
        self,
        kind: JobKind,
        size: int,
        ctx: JobContext,
        retry_policy: RetryPolicy,
        dispatcher: pykka.ActorRef[Any],
        on_job_end: Callable[[str, int, str], None],
    ) -> None:
        super().__init__()
        self.kind = kind
        self.size = size
        self.ctx = ctx
        self.retry_policy = retry_policy
        self.dispatcher = dispatcher
        self.on_job_end = on_job_end
        self.workers: dict[int, pykka.ActorRef[Any]] = {}
        self.idle: list[int] = []
        self.running: dict[int, int] = {}  # job id -> slot
        self.draining = False
        self.fill_asked = False
        #: False once a claim came back short: the database had no due job left, and
        #: a new one arrives with a Wake (a submit, a retry falling due), so workers
        #: that go idle until then do not claim in vain.
        self.maybe_more = True

    def on_start(self) -> None:
        """Runs in the pool's thread: starts the workers."""
        for slot in range(self.size):
            self._start_worker(slot)

    def on_stop(self) -> None:
        """Runs in the pool's thread: stops the workers."""
        for ref in self.workers.values():
            ref.stop(block=False)
        for ref in self.workers.values():
            ref.actor_stopped.wait(_WORKER_STOP_TIMEOUT_S)

    def _start_worker(self, slot: int) -> None:
        self.workers[slot] = Worker.start(
            slot, self.kind, self.ctx, self.retry_policy, self.actor_ref, self.dispatcher
        )
        self.idle.append(slot)

    def on_receive(self, message: Any) -> Any:
        """Runs in the pool's thread."""
        match message:
            case Wake():
                self.maybe_more = True
                self._fill_soon()
            case Fill():
                self.fill_asked = False
                self._fill()
            case WorkerIdle(slot=idle_slot, job_id=job_id, status=status, record=record):
                self.running.pop(job_id, None)
                self.idle.append(idle_slot)
                if record:
                    status = self._record_end(job_id, status)
                self.on_job_end(self.kind.name, job_id, status)
                self._fill_soon()
            case StopJob(job_id=job_id):
                slot = self.running.get(job_id)
                if slot is None:
                    logger.debug(
                        "{} pool: stop of job {} ignored, not running", self.kind.name, job_id
                    )
                    return False
                self.workers[slot].tell(StopJob(job_id))
                return True
            case WorkerDied():
                self._replace(message)
            case PoolStats():
                return {"size": self.size, "busy": len(self.running), "jobs": sorted(self.running)}
            case Drain():
                self.draining = True
                return list(self.workers.values())
            case _:
                logger.warning("{} pool: unknown message {!r}", self.kind.name, message)
        return None

    def _fill_soon(self) -> None:
        # Wake-ups that arrive together (a burst of submits, several workers finishing)
        # end in one claim for all idle workers: the Fill is queued behind them. With
        # nothing else in the inbox, the claim is made at once.
        if self.idle and self.maybe_more and not self.fill_asked and not self.draining:
            if self.actor_inbox.empty():
                self._fill()
            else:
                self.fill_asked = True
                self.actor_ref.tell(Fill())

    def _fill(self) -> None:
        if not self.idle or self.draining:
            return
        wanted = len(self.idle)
        try:
            rows = self.ctx.store.claim_many(
                self.kind.table, None if self.kind.table != "job" else self.kind.name, wanted
            )
        except Exception as exc:
            logger.opt(exception=exc).error("{} pool: cannot claim jobs: {}", self.kind.name, exc)
            return
        self.maybe_more = len(rows) == wanted
        for row in rows:
            slot = self.idle.pop()
            job_id = int(row["id"])
            self.running[job_id] = slot
            self.workers[slot].tell(Run(job_id, row))

    def _record_end(self, job_id: int, status: str) -> str:
        # The job's last write, handed back by its worker (see StoredJob.update_status).
        # Returns the status the job holds afterwards.
        try:
            self.ctx.store.set_status(self.kind.table, job_id, status)
        except StatusConflict as conflict:
            # The job was ended elsewhere meanwhile (by hand, in the database): that stands.
            self.kind.make_job(self.ctx, job_id).logger.warning(
                "{}; keeping status {!r}", conflict, conflict.current
            )
            return conflict.current or status
        except Exception as exc:
            self.kind.make_job(self.ctx, job_id).logger.opt(exception=exc).error(
                "cannot record status {}: {}; the job is left running (the next start queues it)",
                status,
                exc,
            )
            logger.error(
                "{} pool: cannot record job {} {}: {}", self.kind.name, job_id, status, exc
            )
        return status

    def _replace(self, died: WorkerDied) -> None:
        logger.error(
            "{} pool: worker {} died ({}); replacing it", self.kind.name, died.slot, died.error
        )
        if died.job_id is not None:
            self.running.pop(died.job_id, None)
            job = self.kind.make_job(self.ctx, died.job_id)
            try:
                self.ctx.store.set_status(self.kind.table, died.job_id, Status.ERROR)
                job.logger.error("state error (worker died: {})", died.error)
            except Exception as exc:
                job.logger.error("worker died and the job's status could not be set: {}", exc)
            self.on_job_end(self.kind.name, died.job_id, Status.ERROR)
        self.workers.pop(died.slot, None)
        if died.slot in self.idle:
            self.idle.remove(died.slot)
        if not self.draining:
            self._start_worker(died.slot)
            self._fill()
