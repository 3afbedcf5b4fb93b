"""A worker: one slot of a pool, owning one state machine."""

from __future__ import annotations

import threading
from collections import deque
from types import TracebackType
from typing import Any

import pykka
from loguru import logger

from actors.base import Runtime, ServiceActor
from actors.handoff import HandoffSlots, Slot
from actors.messages import Release, Released, Run, Step, WorkerDied, WorkerIdle
from model.interrupt import Interrupt
from model.jobs import LastWrite, StoredJob
from model.kinds import JobKind
from model.sm import SM
from model.status import TERMINAL, Status

__all__ = ["Worker"]


class Worker(ServiceActor):
    """Runs one job at a time, taking its transitions one after the other while its
    inbox is empty; with a message waiting, it sends itself a :class:`Step` behind it.

    A stop reaches the worker through ``interrupt``, which its pool sets from the
    pool's thread (see :mod:`model.interrupt`): the machine reads it between two
    transitions and when a step returns or fails, and a step blocked on the network
    is made to return at once.

    The worker writes the end of its job (see :mod:`actors.handoff`), which then
    reaches the database and the job's listeners without waking the pool:
    - while its pool's queue is not empty, with the claim of the next due job, in one
      write, and it runs that job;
    - else, for a job a submit handed it, without waiting for SQLite's lock (the thread
      holding it commits the end with its own write, then tells the listeners and
      offers the worker to submits again, :meth:`HandoffSlots.come_back`).
    Tells its pool :class:`WorkerIdle` when it has nothing to run (its claim found the
    queue empty, its offer was withdrawn) or a write for the pool to make (the end of
    a job the pool claimed while the queue is empty, a retry, a job handed back, an end
    the database refused), and :class:`WorkerDied` from ``on_failure`` when an
    exception escapes it. A pool that is stopping takes no more messages: the worker
    then leaves the message in ``last_words``, which the pool reads once its workers
    ended.

    Sets ``ended`` as its thread's last act, after ``on_stop`` or ``on_failure``: pykka
    marks a failed actor stopped *before* ``on_failure`` runs, so the pool waits on
    this event, not on ``actor_stopped``, for the job's last status to be handed over.
    """

    def __init__(
        self,
        slot: int,
        kind: JobKind,
        runtime: Runtime,
        pool: pykka.ActorRef[Any],
        interrupt: Interrupt,
        ended: threading.Event,
        last_words: deque[WorkerIdle | WorkerDied],
        slots: HandoffSlots,
    ) -> None:
        super().__init__()
        self.slot = slot
        self.slots = slots
        self.as_slot = Slot(slot, self.actor_ref, interrupt)
        self.kind = kind
        self.ctx = runtime.jobs
        self.on_job_end = runtime.on_job_end
        self.retry_policy = runtime.retry_policy
        self.pool = pool
        self.sm = SM(interrupt)
        self.ended = ended
        self.last_words = last_words
        self.job: StoredJob | None = None
        #: The job was claimed by the pool: while the queue is empty, its end goes back
        #: to the pool (see _done).
        self.by_pool = False
        self.released = False  # the service is shutting down

    def on_start(self) -> None:
        """Runs in the worker's thread: network calls made here find its interrupt."""
        self.sm.interrupt.bind()

    def on_stop(self) -> None:
        self.ended.set()

    def on_receive(self, message: Any) -> Any:
        """Runs in the worker's own thread."""
        match message:
            case Step(job_id=job_id):
                if self.job is not None and self.job.id == job_id:
                    self._step()
            case Run():
                self._run(message)
            case Release():
                return Released(self._release())
            case _:
                logger.warning("worker {}: unknown message {!r}", self.slot, message)
        return None

    def _run(self, message: Run) -> None:
        job = self.kind.make_job(self.ctx, message.job_id, message.row)
        self.job = job
        self.by_pool = message.by_pool
        if self.released or self.sm.interrupt.requested:
            self._not_started(job)
            return
        try:
            self.sm.reset(job, self.kind.add_transitions, retry_policy=self.retry_policy)
        except Exception as exc:
            job.logger.opt(exception=exc).error("cannot start job: {}", exc)
            job.update_status(Status.ERROR)
            self._done()
            return
        # Run is the message of the first transition; each later one has its own Step.
        self.sm.begin(Status.RUNNING)
        self._step()

    def _step(self) -> None:
        # The machine reads the stop request (the interrupt) at each transition; a
        # message in the inbox (a release at shutdown) is read between two of them.
        while self.sm.step():
            if not self.actor_inbox.empty():
                assert self.job is not None
                self.actor_ref.tell(Step(self.job.id))
                return
        self._done()

    def _not_started(self, job: StoredJob) -> None:
        """A job that does not start: asked to stop first, or come as the service shuts
        down (written back ``pending``)."""
        if self.released:
            job.logger.info("service shutting down: job handed back as pending")
            job.last_write = LastWrite(Status.PENDING)
        else:
            job.logger.info("state stopped (stop requested before it started)")
            job.update_status(Status.STOPPED)
        self._done()

    def _done(self) -> None:
        job, self.job = self.job, None
        stop_requested = self.sm.interrupt.disarm()
        if job is None:
            return
        write = job.last_write
        if stop_requested and write is not None and write.status == Status.RETRYING:
            # The stop came after the machine last looked, as the step's failure was
            # being recorded: it still wins.
            job.logger.info("state stopped (stop requested while retrying)")
            write = LastWrite(Status.STOPPED)
        if write is None or write.status not in TERMINAL:
            self._to_pool(WorkerIdle(self.slot, job.id, job.status, write))
        elif self.slots.claim_next and not self.released:
            self._end_and_claim(job, write)
        elif self.by_pool:
            # The queue is empty: the pool that claimed it writes its end and offers the
            # worker (a job queued at a steady rate then ends sooner than when its
            # worker writes the end: 0.24 ms p50 against 0.35, scripts/bench/handoff.py).
            self._to_pool(WorkerIdle(self.slot, job.id, job.status, write))
        else:
            job_id, status = job.id, job.status

            def ended(error: BaseException | None) -> None:
                self._ended(job_id, status, write, error)

            self.ctx.store.set_status_soon(
                self.kind.table, job_id, write.status, ended, count_attempt=write.count_attempt
            )

    def _end_and_claim(self, job: StoredJob, write: LastWrite) -> None:
        """Writes the end of its job and claims the next due job in one write, while the
        pool's queue is not empty, and runs that job with no message to the pool. An
        end not written goes to the pool, with no claim; an empty queue tells the pool
        the worker is idle."""
        try:
            row = self.ctx.store.end_and_claim_next(
                self.kind.table,
                self.kind.scope,
                job.id,
                write.status,
                count_attempt=write.count_attempt,
            )
        except Exception as exc:
            logger.debug("worker {}: end of job {} left to the pool: {}", self.slot, job.id, exc)
            self._to_pool(WorkerIdle(self.slot, job.id, job.status, write))
            return
        self.on_job_end(self.kind.name, job.id, write.status)
        if row is None:
            idle = WorkerIdle(self.slot, job.id, job.status, None, told=True, found_none=True)
            self._to_pool(idle)
            return
        self.slots.let_go(job.id)
        next_id = int(row["id"])
        self.slots.handed(next_id, self.as_slot)
        if row.get("stop_requested"):  # asked to stop on another node as it was handed back
            self.sm.interrupt.request(next_id)
        self.actor_ref.tell(Run(next_id, row))

    def _ended(
        self, job_id: int, status: str, write: LastWrite, error: BaseException | None
    ) -> None:
        """The end of a job handed over was written (``error`` None), by this thread or
        by the one that held the write lock: tells the job's listeners and offers the
        worker again, or tells its pool. An end not written goes to the pool, which
        writes it again until it lands."""
        if error is not None:
            logger.debug("worker {}: end of job {} left to the pool: {}", self.slot, job_id, error)
            self._to_pool(WorkerIdle(self.slot, job_id, status, write))
            return
        self.on_job_end(self.kind.name, job_id, write.status)
        if self.released or not self.slots.come_back(self.as_slot, job_id):
            self._to_pool(WorkerIdle(self.slot, job_id, status, None, told=True))

    def _to_pool(self, message: WorkerIdle | WorkerDied) -> None:
        try:
            self.pool.tell(message)
        except pykka.ActorDeadError:  # the pool is stopping: it reads them at the end
            self.last_words.append(message)

    def _release(self) -> int | None:
        self.released = True
        job, self.job = self.job, None
        stop_requested = self.sm.interrupt.disarm()
        if job is None:
            return None
        # A job asked to stop is not handed back to run again after the restart.
        status = Status.STOPPED if stop_requested else Status.PENDING
        try:
            state = self.sm.release(status)
            if status in TERMINAL:  # kept for the pool to write, as every end
                self._to_pool(WorkerIdle(self.slot, job.id, job.status, job.last_write))
            job.logger.info(
                "service shutting down in state {}: job handed back as {}", state, status
            )
        except Exception as exc:
            job.logger.opt(exception=exc).error("could not hand the job back: {}", exc)
        return job.id

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Runs in the worker's thread when an exception escaped ``on_receive``."""
        job = self.job
        try:
            if job is not None:
                job.logger.opt(exception=(exception_type, exception_value, traceback)).critical(
                    "worker {} died: {!r}", self.slot, exception_value
                )
            self._to_pool(WorkerDied(self.slot, job.id if job else None, repr(exception_value)))
        finally:
            self.ended.set()
