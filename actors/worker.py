"""A worker: one slot of a pool, owning one state machine."""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Any

import pykka
from loguru import logger

from actors.base import ServiceActor
from actors.messages import Release, Reschedule, Run, Step, StopJob, WorkerDied, WorkerIdle
from model.errors import JobServiceError
from model.jobs import JobContext, StoredJob
from model.kinds import JobKind
from model.sm import SM, Job, RetryPolicy
from model.status import Status

__all__ = ["Worker"]


def _schedule_retry(job: Job, delay_s: float) -> datetime:
    assert isinstance(job, StoredJob)
    return job.schedule_retry(delay_s)


class Worker(ServiceActor):
    """Runs one job at a time, one transition per message it sends itself, so a
    :class:`StopJob` that arrives is handled before the job's next transition.

    Tells its pool :class:`WorkerIdle` when the machine holds (with the terminal status
    the job reached, for the pool to record), and
    :class:`WorkerDied` from ``on_failure`` when an exception escapes it.
    """

    def __init__(
        self,
        slot: int,
        kind: JobKind,
        ctx: JobContext,
        retry_policy: RetryPolicy,
        pool: pykka.ActorRef[Any],
        dispatcher: pykka.ActorRef[Any],
    ) -> None:
        super().__init__()
        self.slot = slot
        self.kind = kind
        self.ctx = ctx
        self.retry_policy = retry_policy
        self.pool = pool
        self.dispatcher = dispatcher
        self.sm = SM()
        self.job: StoredJob | None = None

    def on_receive(self, message: Any) -> Any:
        """Runs in the worker's own thread."""
        match message:
            case Step(job_id=job_id):
                if self.job is not None and self.job.id == job_id:
                    self._step()
            case Run():
                self._run(message)
            case StopJob(job_id=job_id):
                if not self.sm.stop(job_id):
                    logger.debug(
                        "worker {}: stop of job {} ignored, not running it", self.slot, job_id
                    )
            case Release():
                return self._release()
            case _:
                logger.warning("worker {}: unknown message {!r}", self.slot, message)
        return None

    def _run(self, message: Run) -> None:
        job = self.kind.make_job(self.ctx, message.job_id, message.row)
        job.pool_records_end = True
        self.job = job
        try:
            self.sm.reset(
                job,
                self.kind.add_transitions,
                retry_policy=self.retry_policy,
                schedule_retry=_schedule_retry,
                reschedule=self._reschedule,
            )
        except Exception as exc:
            job.logger.opt(exception=exc).error("cannot start job: {}", exc)
            try:
                job.update_status(Status.ERROR)
            except JobServiceError as conflict:
                job.logger.warning("{}", conflict)
            self._done()
            return
        # Run is the message of the first transition; each later one has its own Step.
        self.sm.begin(Status.RUNNING)
        self._step()

    def _step(self) -> None:
        if self.sm.step():
            assert self.job is not None
            self.actor_ref.tell(Step(self.job.id))
        else:
            self._done()

    def _done(self) -> None:
        job, self.job = self.job, None
        if job is not None:
            self.pool.tell(WorkerIdle(self.slot, job.id, job.status, bool(job.unrecorded_end)))

    def _reschedule(self, job: Job, due: datetime) -> None:
        self.dispatcher.tell(Reschedule(self.kind.name, job.id, due))

    def _release(self) -> int | None:
        job, self.job = self.job, None
        if job is None:
            return None
        handler = self.sm.handlers.get(self.sm.current_state)
        try:
            if handler is not None:
                handler.exit()
            job.update_status(Status.PENDING)
            job.logger.info(
                "service shutting down in state {}: job handed back as pending",
                self.sm.current_state,
            )
        except Exception as exc:
            job.logger.opt(exception=exc).error("could not hand the job back: {}", exc)
        self.sm.current_job = None
        return job.id

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Runs in the worker's thread when an exception escaped ``on_receive``."""
        job = self.job
        if job is not None:
            job.logger.opt(exception=(exception_type, exception_value, traceback)).critical(
                "worker {} died: {!r}", self.slot, exception_value
            )
        self.pool.tell(WorkerDied(self.slot, job.id if job else None, repr(exception_value)))
