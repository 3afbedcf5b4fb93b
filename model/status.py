"""Job statuses, as the original stores them in the database, and which may follow which."""

from __future__ import annotations

import enum

__all__ = ["ACTIVE", "ALLOWED_FROM", "CLAIMABLE", "TERMINAL", "Status"]


class Status(enum.StrEnum):
    """The status column of every job table, and the states the state machine shares with it."""

    PENDING = "pending"  #: waiting for a worker (or handed back at shutdown)
    RUNNING = "running"  #: a worker owns it
    ERROR = "error"  #: ended by a failure; the reason is in the job's log
    STOPPED = "stopped"  #: ended by a stop request
    FINISHED = "finished"  #: ended with its work done
    CANCELED = "canceled"  #: ended because it was no longer wanted
    RETRYING = "retrying"  #: waiting until ``next_attempt_at`` to run again


#: Statuses a job never leaves.
TERMINAL = frozenset({Status.ERROR, Status.STOPPED, Status.FINISHED, Status.CANCELED})
#: Statuses of a job that still has work to do.
ACTIVE = frozenset({Status.PENDING, Status.RUNNING, Status.RETRYING})

#: For each status, the statuses a job may hold for the change to apply. A status
#: may be set again to itself where that is harmless (the claim sets ``running``
#: before the state machine does).
ALLOWED_FROM: dict[str, frozenset[str]] = {
    Status.RUNNING: frozenset({Status.PENDING, Status.RETRYING, Status.RUNNING}),
    Status.FINISHED: frozenset({Status.RUNNING}),
    Status.ERROR: frozenset({Status.PENDING, Status.RUNNING, Status.RETRYING}),
    Status.STOPPED: frozenset({Status.PENDING, Status.RUNNING, Status.RETRYING, Status.STOPPED}),
    Status.CANCELED: frozenset({Status.PENDING, Status.RUNNING, Status.RETRYING}),
    Status.RETRYING: frozenset({Status.RUNNING}),
    Status.PENDING: frozenset({Status.RUNNING, Status.PENDING}),
}

#: The statuses a worker may take a job from (a retrying one once it is due).
CLAIMABLE: tuple[str, ...] = (Status.PENDING.value, Status.RETRYING.value)
