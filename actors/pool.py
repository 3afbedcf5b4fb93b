"""A worker pool: the workers of one job kind, and the claiming of that kind's jobs."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from typing import Any

import pykka
from loguru import logger

from actors.base import Runtime, ServiceActor
from actors.handoff import HandoffSlots, Slot
from actors.messages import (
    Drain,
    Drained,
    Fill,
    PassOn,
    PoolStats,
    PoolStatus,
    Reschedule,
    Run,
    StopJob,
    Stopping,
    StopRequested,
    Wake,
    WorkerDied,
    WorkerIdle,
    WriteAgain,
)
from actors.pool_stops import PoolStops
from actors.worker import Worker
from model.errors import StatusConflict
from model.interrupt import Interrupt
from model.jobs import LastWrite
from model.kinds import JobKind
from model.status import Status

__all__ = ["WorkerPool"]

_WORKER_STOP_TIMEOUT_S = 10.0
#: First wait before a failed write or claim is tried again; it doubles up to the max.
_WRITE_AGAIN_FIRST_S = 0.1
_WRITE_AGAIN_MAX_S = 5.0
#: Seconds a wake to pass on waits for a worker of a pool whose workers are all busy:
#: short jobs free one by then; the other nodes are woken for longer ones.
PASS_ON_AFTER_S = 0.05


class WorkerPool(PoolStops, ServiceActor):
    """Owns ``size`` workers of one kind and knows which runs which job (through
    :class:`HandoffSlots`).

    The database is the queue: whenever a worker is idle the pool claims the oldest due
    job of its kind (one guarded UPDATE), or with the queue empty, offers it to submits
    (:mod:`actors.handoff`), so it never runs more jobs than it has workers and never
    runs a stopped job. While the queue is not empty, a worker done with a job claims
    its next one itself. A worker that dies is replaced.

    Workers write the ends of the jobs submits handed them, and of any job while the
    queue is not empty; the pool writes what a worker hands it (the end of a job it
    claimed while the queue is empty, a retry, a job handed back, an end the database
    refused). A write or a claim the database refuses is tried again by the pool's one
    timer, with backoff, until it lands: a job is never left ``running`` by a live pool.
    """

    def __init__(
        self,
        kind: JobKind,
        size: int,
        runtime: Runtime,
        dispatcher: pykka.ActorRef[Any],
        slots: HandoffSlots,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.size = size
        self.runtime = runtime
        self.ctx = runtime.jobs
        self.dispatcher = dispatcher
        self.on_job_end = runtime.on_job_end
        self.workers: dict[int, pykka.ActorRef[Any]] = {}
        self.interrupts: dict[int, Interrupt] = {}
        self._slots: dict[int, Slot] = {}  # each worker as offered to submits
        #: Set by each slot's worker as its thread's last act (see Worker).
        self.ended: dict[int, threading.Event] = {}
        #: What workers told this pool after it stopped taking messages (see Worker).
        self.last_words: deque[WorkerIdle | WorkerDied] = deque()
        self.idle: list[int] = []
        self.draining = False
        self.fill_asked = False
        #: False once a claim came back short, or a worker's did and a read finds no
        #: job due (a read, where a claim takes the write lock): a new one arrives
        #: with a Wake (a submit, a retry falling due), so idle workers do not claim in
        #: vain.
        self.maybe_more = True
        #: A wake asked this pool to wake the other nodes should its next claim not
        #: take everything (see Wake.pass_on).
        self.pass_on = False
        #: Last status changes the database refused, by job id, written again later.
        self.unwritten: dict[int, LastWrite] = {}
        #: Ends handed over and not yet written: those that come together are written
        #: in one statement (see _fill_soon).
        self.ending: list[tuple[int, LastWrite]] = []
        #: Jobs asked to stop after their worker let go of them (see _stop_job).
        self.stop_after: dict[int, float] = {}
        self.claim_failed = False
        #: Idle workers offered to submits here (see actors.handoff).
        self.slots = slots
        self._timer: threading.Timer | None = None
        self._pass_on_timer: threading.Timer | None = None
        self._again_s = _WRITE_AGAIN_FIRST_S

    def on_start(self) -> None:
        """Runs in the pool's thread: starts the workers."""
        for slot in range(self.size):
            self._start_worker(slot)

    def on_stop(self) -> None:
        """Runs in the pool's thread: stops the workers; writes once more what the
        database refused (what still fails stays ``running`` for the next start)."""
        self.draining = True
        self.slots.stopping()
        self.slots.withdraw()  # workers going idle now tell this pool
        for timer in (self._timer, self._pass_on_timer):
            if timer is not None:
                timer.cancel()
        for ref in self.workers.values():
            ref.stop(block=False)
        deadline = time.monotonic() + _WORKER_STOP_TIMEOUT_S
        for slot in self.workers:
            self.ended[slot].wait(max(deadline - time.monotonic(), 0.0))
        self._hear_last_words()
        self._write_ends()
        self._write_again()
        for job_id, write in self.unwritten.items():
            logger.error(
                "{} pool: job {} could not be recorded {}; it stays running for the next start",
                self.kind.name,
                job_id,
                write.status,
            )

    def _hear_last_words(self) -> None:
        # A worker's WorkerIdle or WorkerDied told in the instant between this pool
        # taking its stop message and pykka marking it stopped is in the inbox, which
        # pykka would drop; one told later is in last_words: each job's last status is
        # handed over here instead, in the order told. A worker still running after
        # the wait hands over nothing: its job stays running, for the next start or
        # another node to take.
        others = []
        while not self.actor_inbox.empty():  # this thread is the inbox's only reader
            envelope = self.actor_inbox.get()
            if isinstance(envelope.message, WorkerIdle | WorkerDied):
                self.on_receive(envelope.message)
            else:
                others.append(envelope)
        for envelope in others:  # answered by pykka: the pool is stopped
            self.actor_inbox.put(envelope)
        while self.last_words:
            self.on_receive(self.last_words.popleft())

    def _start_worker(self, slot: int) -> None:
        interrupt = self.interrupts[slot] = Interrupt()
        ended = self.ended[slot] = threading.Event()
        told = (self.actor_ref, interrupt, ended, self.last_words, self.slots)
        self.workers[slot] = Worker.start(slot, self.kind, self.runtime, *told)
        self._slots[slot] = Slot(slot, self.workers[slot], interrupt)
        self.idle.append(slot)

    def on_receive(self, message: Any) -> Any:
        """Runs in the pool's thread. With no due job left to claim, the idle workers
        are offered to submits (see :mod:`actors.handoff`), and taken back as the next
        message comes in."""
        self.idle += self.slots.withdraw()
        answer = self._receive(message)
        if not (self.maybe_more or self.draining or self.claim_failed or self.fill_asked):
            self.slots.offer([self._slots[slot] for slot in self.idle])
            self.idle = []
        return answer

    def _receive(self, message: Any) -> Any:
        match message:
            case Wake(look_first=look_first, pass_on=pass_on):
                if look_first and self.idle and not self._anything_due():
                    return None
                self.maybe_more = True
                # Alone on the database (as on SQLite), there is no one to pass it on to.
                self.pass_on = (self.pass_on or pass_on) and self.ctx.store.notify_others
                if self.pass_on and (not self.idle or self.draining):
                    self._pass_on_soon()
                self._fill_soon()
            case PassOn():
                self._pass_on_timer = None
                if not self.idle:  # else a claim decides
                    self._pass_on(full=True)
            case Fill():
                self.fill_asked = False
                self._end_and_fill(self.maybe_more)
            case WorkerIdle():
                self._worker_idle(message)
            case StopJob(job_id=job_id):
                return Stopping(self._stop_job(job_id))
            case StopRequested(job_id=job_id):
                if not self._stop_job(job_id):
                    self._stop_waiting(job_id)
            case WriteAgain():
                self._timer = None
                self._write_again()
                if self.claim_failed:
                    self._fill()
            case WorkerDied():
                self._replace(message)
            case PoolStats():
                jobs = self.slots.handed_jobs
                return PoolStatus(
                    size=self.size,
                    busy=len(jobs),
                    jobs=tuple(sorted(jobs)),
                    unrecorded=len(self.unwritten),
                    claim_failing=self.claim_failed,
                )
            case Drain():
                self.draining = True
                self.slots.stopping()
                return Drained(tuple(self.workers.values()))
            case _:
                logger.warning("{} pool: unknown message {!r}", self.kind.name, message)
        return None

    def _worker_idle(self, message: WorkerIdle) -> None:
        job_id, write = message.job_id, message.write
        self.slots.let_go(job_id)
        self.idle.append(message.slot)
        if self.stop_after.pop(job_id, None) is not None:
            write = self._stopped_instead(job_id, write)
        if message.found_none and self.maybe_more and not self._anything_due():
            self.maybe_more = False  # as a claim that came back short would tell
        if write is None:
            if not message.told:
                self.on_job_end(self.kind.name, job_id, message.status)
        elif write.due is None:
            self.ending.append((job_id, write))
        else:
            self._write(job_id, write)
        self._fill_soon()

    def _anything_due(self) -> bool:
        # A poll finds nothing to do most of the time: a read tells, where a claim
        # takes the database's write lock (SQLite) for nothing. A read that fails is
        # taken for a yes: the claim then fails too, and says why.
        try:
            return self.ctx.store.has_due(self.kind.table, self.kind.scope)
        except Exception:
            return True

    def _fill_soon(self) -> None:
        # Wake-ups that arrive together (a burst of submits, several workers finishing)
        # end in one write of the jobs that ended and one claim for all idle workers:
        # the Fill is queued behind them. With nothing else in the inbox, both are
        # made at once, and always once the pool drains (a stopped pool cannot tell
        # itself a Fill).
        claim = bool(self.idle) and self.maybe_more and not self.draining
        if (claim or self.ending) and not self.fill_asked:
            if self.draining or self.actor_inbox.empty():
                self._end_and_fill(claim)
            else:
                self.fill_asked = True
                self.actor_ref.tell(Fill())

    def _end_and_fill(self, claim: bool) -> None:
        """Writes the ends handed over since the last time and, when ``claim``, claims
        jobs for every idle worker: in one round trip when the ends are of one kind (the
        usual case; see :meth:`Store.end_and_claim`)."""
        by_write = self._take_ends()
        if not (claim and self.idle and not self.draining):
            self._write_grouped(by_write)
            return
        if len(by_write) != 1 or not self.ctx.store.ends_with_claims:
            self._write_grouped(by_write)
            self._fill()
            return
        wanted = len(self.idle)
        if wanted <= 0:
            self._write_grouped(by_write)
            return
        ((write, job_ids),) = by_write.items()
        try:
            written, rows = self.ctx.store.end_and_claim(
                self.kind.table,
                self.kind.scope,
                job_ids,
                write.status,
                count_attempt=write.count_attempt,
                limit=wanted,
            )
        except Exception as exc:
            # Either part may have failed: each is made again on its own, and says why.
            logger.debug("{} pool: ends and claim made apart: {}", self.kind.name, exc)
            self._write_one_by_one(write, job_ids, set())
            self._fill()
            return
        self._write_one_by_one(write, job_ids, written)
        self._claimed(rows, wanted)

    def _write_ends(self) -> None:
        """Writes the ends handed over since the last time (see :meth:`_write_grouped`)."""
        self._write_grouped(self._take_ends())

    def _take_ends(self) -> dict[LastWrite, list[int]]:
        ending, self.ending = self.ending, []
        by_write: dict[LastWrite, list[int]] = {}
        for job_id, write in ending:
            by_write.setdefault(write, []).append(job_id)
        return by_write

    def _write_grouped(self, by_write: dict[LastWrite, list[int]]) -> None:
        """One statement for the ends of one status (each job guarded as alone), one
        per job for any it did not change (the conflicts and failures of
        :meth:`_write`)."""
        for write, job_ids in by_write.items():
            written: set[int] = set()
            if len(job_ids) > 1:
                try:
                    written = self.ctx.store.set_statuses(
                        self.kind.table, job_ids, write.status, count_attempt=write.count_attempt
                    )
                except Exception as exc:
                    logger.debug("{} pool: ends written one by one: {}", self.kind.name, exc)
            self._write_one_by_one(write, job_ids, written)

    def _write_one_by_one(self, write: LastWrite, job_ids: list[int], written: set[int]) -> None:
        """``write`` landed for the jobs in ``written``; each of the others is written alone."""
        for job_id in job_ids:
            if job_id in written:
                self._written(job_id, write, write.status)
            else:
                self._write(job_id, write)

    def _fill(self) -> None:
        wanted = len(self.idle)
        if wanted <= 0 or self.draining:
            return
        try:
            rows = self.ctx.store.claim_many(self.kind.table, self.kind.scope, wanted)
        except Exception as exc:
            if not self.claim_failed:
                logger.opt(exception=exc).error(
                    "{} pool: cannot claim jobs: {}; claiming again until it works",
                    self.kind.name,
                    exc,
                )
            self.claim_failed = True
            self._again_later()
            return
        self._claimed(rows, wanted)

    def _claimed(self, rows: list[dict[str, Any]], wanted: int) -> None:
        """Runs the jobs a claim for ``wanted`` idle workers took."""
        if self.claim_failed:
            logger.info("{} pool: claims work again", self.kind.name)
            self.claim_failed = False
        self.maybe_more = len(rows) >= wanted
        # A claim that filled a few idle workers says little: they free up again in
        # moments. One that filled the whole pool says work is piling up.
        self._pass_on(full=self.maybe_more and wanted >= self.size)
        for row in rows[wanted:]:
            self._hand_back_surplus(int(row["id"]), wanted, len(rows))
        for row in rows[:wanted]:
            job_id = int(row["id"])
            if row.get("stop_requested"):
                # Asked to stop on another node as it was handed back: it does not run.
                self._stopped_before(job_id, row, "on another node")
            else:
                self._start(job_id, row)

    def _start(self, job_id: int, row: Any) -> None:
        slot = self.idle.pop()
        # Armed here, so that a stop that comes before the worker reads Run counts.
        self.slots.handed(job_id, self._slots[slot])
        self.workers[slot].tell(Run(job_id, row, by_pool=True))

    def _pass_on_soon(self) -> None:
        """A wake to pass on found no idle worker: a draining pool passes it on now;
        else the pass-on timer (one at a time) looks again in :data:`PASS_ON_AFTER_S`."""
        if self.draining:
            self._pass_on(full=True)
        elif self._pass_on_timer is None:
            self._pass_on_timer = self._arm(PASS_ON_AFTER_S, PassOn(), "pass-on")

    def _pass_on(self, *, full: bool) -> None:
        """Settles a wake to pass on: wakes the other nodes for the kind when the pool is
        ``full`` (no worker idle :data:`PASS_ON_AFTER_S` after the wake, or a claim for
        the whole pool took all it asked); a claim that took less took all there was."""
        if self.pass_on:
            self.pass_on = False
            if full:
                self.runtime.node.wake_others(self.kind.name)

    def _hand_back_surplus(self, job_id: int, wanted: int, got: int) -> None:
        # A claim never takes more than it asks for (see Store.claim_many); should one
        # ever do, the extra jobs go back to the queue rather than run unowned.
        logger.error(
            "{} pool: a claim of {} jobs took {}; job {} goes back to the queue",
            self.kind.name,
            wanted,
            got,
            job_id,
        )
        self._write(job_id, LastWrite(Status.PENDING))

    def _write(self, job_id: int, write: LastWrite) -> None:
        """Writes a job's last status change; a write the database refuses is kept in
        :attr:`unwritten` and tried again by the timer. Listeners hear of the change
        once it is written."""
        status = write.status
        try:
            self.ctx.store.set_status(
                self.kind.table,
                job_id,
                status,
                next_attempt_at=write.due,
                count_attempt=write.count_attempt,
            )
        except StatusConflict as conflict:
            if conflict.current != status:
                # The job was ended elsewhere meanwhile (by hand, in the database), or a
                # write that seemed to fail had landed: what the database holds stands.
                self.kind.make_job(self.ctx, job_id).logger.warning(
                    "{}; keeping status {!r}", conflict, conflict.current
                )
                status = conflict.current or status
        except Exception as exc:
            if job_id not in self.unwritten:
                self.kind.make_job(self.ctx, job_id).logger.error(
                    "cannot record status {}: {}; writing it again until it lands", status, exc
                )
                logger.error(
                    "{} pool: cannot record job {} {}: {}", self.kind.name, job_id, status, exc
                )
            self.unwritten[job_id] = write
            self._again_later()
            return
        self._written(job_id, write, status)

    def _written(self, job_id: int, write: LastWrite, status: str) -> None:
        """``write`` landed, or the database holds ``status`` instead."""
        if self.unwritten.pop(job_id, None) is not None:
            self.kind.make_job(self.ctx, job_id).logger.info("status {} recorded", status)
        if status == Status.RETRYING and write.due is not None:
            # The dispatcher stops before its pools as the service shuts down: the
            # retry is then found in the database at the next start.
            _tell(self.dispatcher, Reschedule(write.due))
        if status != Status.PENDING:
            self.on_job_end(self.kind.name, job_id, status)

    def _write_again(self) -> None:
        for job_id, write in list(self.unwritten.items()):
            self._write(job_id, write)
        if not self.unwritten and not self.claim_failed:
            self._again_s = _WRITE_AGAIN_FIRST_S

    def _again_later(self) -> None:
        """Arms the pool's one timer (if not armed) for a :class:`WriteAgain`."""
        if self._timer is not None or self.draining:
            return
        delay, self._again_s = self._again_s, min(self._again_s * 2, _WRITE_AGAIN_MAX_S)
        self._timer = self._arm(delay, WriteAgain(), "write-again")

    def _arm(self, delay: float, message: Any, name: str) -> threading.Timer:
        """A started timer that tells this pool ``message`` in ``delay`` seconds."""
        timer = threading.Timer(delay, _tell, args=(self.actor_ref, message))
        timer.daemon = True
        timer.name = f"jobservice-{self.kind.name}-{name}"
        timer.start()
        return timer

    def _replace(self, died: WorkerDied) -> None:
        logger.error(
            "{} pool: worker {} died ({}); replacing it", self.kind.name, died.slot, died.error
        )
        if died.job_id is not None:
            self.slots.let_go(died.job_id)
            job = self.kind.make_job(self.ctx, died.job_id)
            job.logger.error("state error (worker died: {})", died.error)
            self._write(died.job_id, LastWrite(Status.ERROR))
        self.workers.pop(died.slot, None)
        if died.slot in self.idle:
            self.idle.remove(died.slot)
        if not self.draining:
            self._start_worker(died.slot)
            self._fill()


def _tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    # From a timer thread: the pool may have stopped meanwhile.
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(message)
