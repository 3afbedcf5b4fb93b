"""Handing a job straight to an idle worker: the submit writes it ``running`` on this
node, and the pool runs it without a claim.

A claim is a write (SQLite's lock, a commit) and a message more per job. When a pool
knows its queue is empty and has idle workers, it offers them as slots; a submit on
this node that takes one inserts its job already ``running`` here (as a claim would
have left it) and tells the pool :class:`Handed`. A submit that finds no slot queues
its job ``pending`` and wakes the pool, as before.

The pool reserves an idle worker for every slot it offered until the slot comes back:
taken (its :class:`Handed` arrives), given back (the insert failed), or withdrawn
(the pool is about to claim, or drains). So a worker is promised to one job at a time,
and a claim never counts on a worker a submit may take.

A job handed over is, in the database, a claimed one: should the process die before
the worker runs it, the next start (or another node, its beat gone) hands it back as
``pending``. A pool that can no longer run it (draining, its worker gone) writes it
back ``pending`` itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pykka
from loguru import logger

from actors.messages import Wake
from model.db import Store
from model.status import Status

__all__ = ["EARLY_STOP_KEPT_S", "Handed", "HandoffSlots", "hand_over", "submit_rows"]

#: Seconds a pool remembers a stop of a job it does not run (yet): a stop that came
#: between a submit's insert and its :class:`Handed` wins when the job arrives.
EARLY_STOP_KEPT_S = 60.0


@dataclass(frozen=True)
class Handed:
    """To a pool: run this job, inserted ``running`` here by a submit that took one of
    the pool's slots (``row`` as inserted)."""

    job_id: int
    row: Mapping[str, Any]


class HandoffSlots:
    """The idle workers of one pool that submits may take, one job each.

    :meth:`take` and :meth:`give_back` are called by submitting threads; the others by
    the pool's thread only (its count of slots out, and the stops it remembers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free = 0  # offered and not taken
        #: Slots out: offered and not yet back (free, or taken and not yet arrived).
        self.out = 0
        self._early_stops: dict[int, float] = {}

    @property
    def free(self) -> int:
        """Slots offered and not taken."""
        with self._lock:
            return self._free

    def take(self) -> bool:
        """Takes a slot if one is free; the caller then inserts its job and tells the
        pool :class:`Handed`, or gives the slot back."""
        with self._lock:
            if self._free <= 0:
                return False
            self._free -= 1
            return True

    def give_back(self) -> None:
        """Returns a slot taken for a job that was not inserted."""
        with self._lock:
            self._free += 1

    def offer(self, idle: int) -> None:
        """Offers every idle worker not reserved already (pool's thread)."""
        extra = idle - self.out
        if extra > 0:
            with self._lock:
                self._free += extra
            self.out += extra

    def withdraw(self) -> int:
        """Takes back the free slots (pool's thread, before a claim); returns the slots
        still out: taken, their :class:`Handed` on its way."""
        with self._lock:
            free, self._free = self._free, 0
        self.out -= free
        return self.out

    def arrived(self) -> None:
        """A :class:`Handed` came in (pool's thread)."""
        self.out = max(self.out - 1, 0)

    def stop_early(self, job_id: int) -> None:
        """Remembers a stop of a job the pool does not run (pool's thread)."""
        now = time.monotonic()
        self._early_stops = {
            job: at for job, at in self._early_stops.items() if now - at < EARLY_STOP_KEPT_S
        }
        self._early_stops[job_id] = now

    def stopped_early(self, job_id: int) -> bool:
        """Whether a stop of ``job_id`` came before it (pool's thread)."""
        return self._early_stops.pop(job_id, None) is not None


def hand_over(
    store: Store,
    table: str,
    values: Mapping[str, Any],
    slots: HandoffSlots,
    pool: pykka.ActorRef[Any],
) -> int:
    """Inserts one job ``running`` on this node and hands it to ``pool``, whose slot the
    caller took; returns its id. An insert that fails gives the slot back and raises.
    A pool that is gone gets its job written back ``pending`` (for the next start or
    another node), and the id is still the answer: the job is queued."""
    try:
        row = store.insert_running(table, values)
    except BaseException:
        slots.give_back()
        raise
    job_id = int(row["id"])
    try:
        pool.tell(Handed(job_id, row))
    except pykka.ActorDeadError:
        try:
            store.set_status(table, job_id, Status.PENDING)
        except Exception as exc:
            # Left running on this node: the next start hands it back.
            logger.error("job {} is queued running on a pool that is gone: {!r}", job_id, exc)
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
    if len(rows) == 1 and slots is not None and slots.take():
        return [hand_over(store, table, rows[0], slots, pool)]
    ids = store.insert_jobs(table, rows, wake=kind)
    try:
        pool.tell(Wake(pass_on=True))
    except Exception as exc:
        # The jobs are written: their ids are the answer, whatever the wake-up raised
        # (a pool that died is replaced by a restart, which claims them).
        logger.error("{} jobs {} are queued but their pool was not woken: {!r}", kind, ids, exc)
    return ids
