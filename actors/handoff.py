"""Handing a job straight to an idle worker: the submit writes it ``running`` on this
node and tells the worker, with no claim and no hop through the pool; and a worker
that takes its next job itself while the queue is not empty.

A claim is a write (SQLite's lock, a commit) and a message more per job, and every
thread a job's path wakes adds to its tail: a thread woken by a thread that was itself
just woken sometimes waits a quarter of a millisecond for a CPU. When a pool knows its
queue is empty, it offers its idle workers as slots (:class:`Slot`); a submit on this
node that takes one inserts its job already ``running`` here (as a claim would
have left it) and tells that worker :class:`~actors.messages.Run` itself. A submit
that finds no slot queues its job ``pending`` and wakes the pool, unless the wake of
an earlier submit waits unread in the pool's inbox (:meth:`HandoffSlots.wake_due`):
the pool reads the queue after that job too.

Every job a worker runs, however it came, is registered here (:meth:`HandoffSlots.handed`).
The pool takes its free slots back as each of its messages comes in, and offers them
again after it while its queue stays empty. Until that next message, a worker done
with a job a submit handed it writes its end without waiting for SQLite's write lock
(a submit's insert that holds it commits the end with its own, see
``SqliteWriter.apply_soon``) and offers itself again (:meth:`HandoffSlots.come_back`):
a stream of submits runs with no message to the pool. Once the pool has taken its
slots back (its queue is not empty), a worker done with any job writes its end and
claims the oldest due job in one write (``Store.end_and_claim_next``) and runs it: a
backlog drains with no message to the pool either. A worker whose claim finds the
queue empty tells its pool, which claims for it or offers it; the pool writes what a
worker hands it (the end of a job the pool claimed while the queue is empty, a retry,
a job handed back, an end the database refused).

A stop of a handed job reaches the worker's interrupt, armed before the worker is
told; a stop that comes between the insert (or claim) and that moment is kept
(:meth:`HandoffSlots.stop`) and requested when the job is armed, so that the job
stops before it starts.

A job handed over is, in the database, a claimed one: should the process die before
the worker runs it, the next start (or another node, its beat gone) hands it back as
``pending``. A worker that is gone or shutting down gets its job written back
``pending``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pykka
from loguru import logger

from actors.messages import Run, Wake
from model.db import Store
from model.interrupt import Interrupt
from model.status import Status

__all__ = ["EARLY_STOP_KEPT_S", "HandoffSlots", "Slot", "hand_over", "submit_rows"]

#: Seconds a pool remembers a stop of a job it does not know (yet): a stop that came
#: between a submit's insert and its hand-over wins when the job is handed over.
EARLY_STOP_KEPT_S = 60.0


@dataclass(frozen=True)
class Slot:
    """An idle worker of a pool, offered to submits."""

    number: int
    worker: pykka.ActorRef[Any]
    interrupt: Interrupt


class HandoffSlots:
    """The idle workers of one pool that submits may take, one job each, and the jobs
    its workers run until they let go of them.

    :meth:`take`, :meth:`give_back`, :meth:`wake_due` and :meth:`wake_lost` are
    called by submitting threads; :meth:`offer`, :meth:`withdraw`, :meth:`stopping`
    and :meth:`stop` by the pool's thread; :meth:`come_back` and :attr:`claim_next` by
    a worker's; :meth:`handed` and :meth:`let_go` by all three."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[Slot] = []  # offered and not taken
        #: Offered, and not withdrawn since: the pool found its queue empty after its
        #: last message, and a worker done with a handed job may come back.
        self._open = False
        #: The pool is draining or stopping: its workers claim nothing more.
        self._stopping = False
        #: A submit's wake is in the pool's inbox, unread: the pool reads the queue
        #: after every job queued since, and a later submit need not wake it again.
        self._woken = False
        self._handed: dict[int, int] = {}  # job id -> slot number
        self._early_stops: dict[int, float] = {}

    @property
    def free(self) -> int:
        """Slots offered and not taken."""
        return len(self._free)

    @property
    def handed_jobs(self) -> list[int]:
        """Jobs handed over whose workers have not let go of them yet."""
        with self._lock:
            return list(self._handed)

    def take(self) -> Slot | None:
        """Takes a free slot, if there is one; the caller then inserts its job and calls
        :meth:`handed`, or gives the slot back."""
        with self._lock:
            return self._free.pop() if self._free else None

    def give_back(self, slot: Slot) -> None:
        """Returns a slot taken for a job that was not inserted."""
        with self._lock:
            self._free.append(slot)

    def handed(self, job_id: int, slot: Slot) -> None:
        """``job_id`` was inserted for ``slot``: arms the worker's interrupt for it, and
        requests a stop of it that came first."""
        with self._lock:
            slot.interrupt.arm(job_id)
            self._handed[job_id] = slot.number
            stopped = self._early_stops.pop(job_id, None) is not None
        if stopped:
            slot.interrupt.request(job_id)

    def offer(self, slots: list[Slot]) -> None:
        """Offers idle workers (pool's thread), which are the pool's no more until
        :meth:`withdraw` gives back those not taken, and opens the offer to workers
        that come back (the pool's queue is empty)."""
        with self._lock:
            self._free.extend(slots)
            self._open = True

    def withdraw(self) -> list[int]:
        """Closes the offer and takes back the slots not taken, those of workers that
        came back included (pool's thread); returns their numbers."""
        with self._lock:
            free, self._free = self._free, []
            self._open = False
            self._woken = False
        return [slot.number for slot in free]

    def wake_due(self) -> bool:
        """A submit queued jobs: whether it wakes the pool (True), or a wake of an
        earlier submit waits unread in the pool's inbox (False)."""
        with self._lock:
            woken, self._woken = self._woken, True
        return not woken

    def wake_lost(self) -> None:
        """The wake :meth:`wake_due` allowed did not reach the pool: the next submit
        wakes it."""
        with self._lock:
            self._woken = False

    @property
    def claim_next(self) -> bool:
        """Whether a worker done with a job claims its next one itself: the pool's queue
        was not empty at its last message (the offer is closed) and it is not
        stopping."""
        return not (self._open or self._stopping)

    def stopping(self) -> None:
        """The pool drains or stops: no worker claims from now on (pool's thread)."""
        self._stopping = True

    def come_back(self, slot: Slot, job_id: int) -> bool:
        """The worker of ``slot`` is done with ``job_id``, handed to it, and its end is
        written: offers the worker again while the offer is open (True). False: the
        worker tells its pool."""
        with self._lock:
            if not self._open:
                return False
            self._handed.pop(job_id, None)
            self._free.append(slot)
            return True

    def stop(self, job_id: int) -> int | None:
        """The slot number of ``job_id`` if it was handed over; else remembers the stop
        for the job's hand-over (pool's thread)."""
        now = time.monotonic()
        with self._lock:
            slot = self._handed.get(job_id)
            if slot is None:
                self._early_stops = {
                    job: at for job, at in self._early_stops.items() if now - at < EARLY_STOP_KEPT_S
                }
                self._early_stops[job_id] = now
            return slot

    def let_go(self, job_id: int) -> None:
        """The worker of a handed job is done with it."""
        if self._handed:
            with self._lock:
                self._handed.pop(job_id, None)


def hand_over(
    store: Store,
    table: str,
    values: Mapping[str, Any],
    slots: HandoffSlots,
    slot: Slot,
    pool: pykka.ActorRef[Any],
) -> int:
    """Inserts one job ``running`` on this node and tells the worker of ``slot``, which
    the caller took, to run it; returns its id. An insert that fails gives the slot back
    and raises. A worker that is gone gets its job written back ``pending`` and its pool
    woken, and the id is still the answer: the job is queued."""
    try:
        row = store.insert_running(table, values)
    except BaseException:
        slots.give_back(slot)
        raise
    job_id = int(row["id"])
    slots.handed(job_id, slot)
    try:
        slot.worker.tell(Run(job_id, row))
    except pykka.ActorDeadError:
        slots.let_go(job_id)
        try:
            store.set_status(table, job_id, Status.PENDING)
            pool.tell(Wake(pass_on=True))
        except pykka.ActorDeadError:
            pass  # the service is stopping: the next start claims it
        except Exception as exc:
            # Left running on this node: the next start hands it back.
            logger.error("job {} is queued running on a worker that is gone: {!r}", job_id, exc)
    return job_id


def submit_rows(
    store: Store,
    table: str,
    kind: str,
    rows: list[dict[str, Any]],
    pool: pykka.ActorRef[Any],
    slots: HandoffSlots | None,
) -> list[int]:
    """Queues jobs of ``kind`` (their ``rows``) here; returns their ids. One job takes a
    free slot of the kind's pool if there is one (:func:`hand_over`); else the jobs are
    inserted ``pending`` in one transaction and the pool is woken, straight (a hop
    through the dispatcher would wake one more thread per submit for nothing it
    decides)."""
    if not rows:
        return []
    slot = slots.take() if len(rows) == 1 and slots is not None else None
    if slot is not None:
        assert slots is not None
        return [hand_over(store, table, rows[0], slots, slot, pool)]
    ids = store.insert_jobs(table, rows, wake=kind)
    if slots is not None and not slots.wake_due():
        return ids
    try:
        pool.tell(Wake(pass_on=True))
    except Exception as exc:
        # The jobs are written: their ids are the answer, whatever the wake-up raised
        # (a pool that died is replaced by a restart, which claims them).
        if slots is not None:
            slots.wake_lost()
        logger.error("{} jobs {} are queued but their pool was not woken: {!r}", kind, ids, exc)
    return ids
