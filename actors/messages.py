"""The whole actor protocol: every message one actor sends another, in one place, and
the typed replies of the messages that are asked (see :func:`actors.base.ask`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pykka

    from model.jobs import LastWrite

__all__ = [
    "Beat",
    "Drain",
    "Drained",
    "Fill",
    "FireDue",
    "GetPools",
    "Notified",
    "Poll",
    "PoolStats",
    "PoolStatus",
    "Pools",
    "Release",
    "Released",
    "Reschedule",
    "Run",
    "Schedule",
    "Step",
    "StopJob",
    "StopRequested",
    "Stopping",
    "Tick",
    "Wake",
    "WorkerDied",
    "WorkerIdle",
    "WriteAgain",
]


@dataclass(frozen=True)
class Schedule:
    """To the dispatcher: jobs of ``kind`` are waiting in the database."""

    kind: str


@dataclass(frozen=True)
class Reschedule:
    """To the dispatcher, from a pool that recorded a retry: a job is due again at
    ``due`` (UTC)."""

    due: datetime


@dataclass(frozen=True)
class Tick:
    """To the dispatcher, from its one timer: the earliest retry is due."""


@dataclass(frozen=True)
class Beat:
    """To the dispatcher, from its clock: record this node's heartbeat and take over the
    jobs of dead nodes (every ``heartbeat_interval``)."""


@dataclass(frozen=True)
class Poll:
    """To the dispatcher, from its clock (every ``poll_interval``) and from the listener
    when it listens again: look at the database for what no notification announced."""


@dataclass(frozen=True)
class FireDue:
    """To the scheduler, from the dispatcher (its timer, its polls): fire the schedules
    whose time has come."""


@dataclass(frozen=True)
class Notified:
    """To the dispatcher, from the listener: another node's notification (see
    :mod:`model.db.nodes` for the payloads)."""

    payload: str


@dataclass(frozen=True)
class GetPools:
    """Ask the dispatcher: its pools by kind name (:class:`Pools`)."""


@dataclass(frozen=True)
class Pools:
    """Reply to :class:`GetPools`."""

    by_kind: Mapping[str, pykka.ActorRef[Any]]
    #: Each pool's idle workers that a submit may hand a job to (see actors.handoff).
    slots: Mapping[str, Any]


@dataclass(frozen=True)
class Wake:
    """To a pool: claim due jobs for idle workers. ``look_first`` (a poll, not a
    submit): read whether any is due before claiming, which is a write. ``pass_on``
    (work queued here, or sent to this node alone): when the pool cannot take it all
    (its claim filled every idle worker, or none was idle), it wakes the other nodes."""

    look_first: bool = False
    pass_on: bool = False


@dataclass(frozen=True)
class Fill:
    """To a pool, from itself: claim jobs for every idle worker (many wake-ups, one claim)."""


@dataclass(frozen=True)
class StopJob:
    """Ask a pool: stop ``job_id`` (its worker's interrupt is set; the step it runs
    returns); answers :class:`Stopping`."""

    job_id: int


@dataclass(frozen=True)
class Stopping:
    """Reply to :class:`StopJob`: whether one of the pool's workers runs the job (and
    now stops it)."""

    running: bool


@dataclass(frozen=True)
class StopRequested:
    """To a pool: another node was asked to stop ``job_id``. Stops it here if one of the
    pool's workers runs it, else stops it where it waits (it moved to ``retrying`` or
    ``pending`` meanwhile), if it still carries the request."""

    job_id: int


@dataclass(frozen=True)
class Drain:
    """Ask a pool: take no more jobs (:class:`Drained`)."""


@dataclass(frozen=True)
class Drained:
    """Reply to :class:`Drain`: the pool's workers."""

    workers: tuple[pykka.ActorRef[Any], ...]


@dataclass(frozen=True)
class PoolStats:
    """Ask a pool: its size, busy workers and the jobs they run (:class:`PoolStatus`)."""


@dataclass(frozen=True)
class PoolStatus:
    """Reply to :class:`PoolStats`."""

    size: int
    busy: int
    #: Ids of the jobs its workers run.
    jobs: tuple[int, ...]
    #: Jobs whose last status the database refused, written again until it lands.
    unrecorded: int
    #: Whether the last claim failed (the pool claims again on its timer).
    claim_failing: bool


@dataclass(frozen=True)
class Run:
    """To a worker: run the job its pool claimed (``by_pool``) or a submit handed it
    (``row`` as claimed; see ``actors.handoff``)."""

    job_id: int
    row: Mapping[str, Any]
    by_pool: bool = False


@dataclass(frozen=True)
class Step:
    """To a worker, from itself: take the next transition of ``job_id`` (sent when
    another message came in as the job ran, so that it is read first)."""

    job_id: int


@dataclass(frozen=True)
class Release:
    """Ask a worker: the service is shutting down; hand the running job back as pending
    (:class:`Released`)."""


@dataclass(frozen=True)
class Released:
    """Reply to :class:`Release`: the job handed back, None when the worker was idle."""

    job_id: int | None


@dataclass(frozen=True)
class WorkerIdle:
    """To a pool: worker ``slot`` is done with ``job_id``, which now holds ``status``;
    ``write``: the job's last status change, for the pool to write (until it lands).
    ``told``: the worker wrote the end itself and told the job's listeners.
    ``found_none``: with it, the worker's claim of its next job found none due."""

    slot: int
    job_id: int
    status: str
    write: LastWrite | None = None
    told: bool = False
    found_none: bool = False


@dataclass(frozen=True)
class PassOn:
    """To a pool, from its pass-on timer: a wake to pass on came while every worker was
    busy, a moment ago (see ``WorkerPool._pass_on_soon``)."""


@dataclass(frozen=True)
class WriteAgain:
    """To a pool, from its one timer: write again what the database refused, claim
    again after a failed claim."""


@dataclass(frozen=True)
class WorkerDied:
    """To a pool: worker ``slot`` died running ``job_id`` (None when idle)."""

    slot: int
    job_id: int | None
    error: str
