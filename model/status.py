"""Job statuses, as the original stores them in the database."""

from __future__ import annotations

import enum

__all__ = ["ACTIVE", "TERMINAL", "Status"]


class Status(enum.StrEnum):
    """The status column of every job table, and the states the state machine shares with it."""

    PENDING = "pending"  #: waiting for a worker (or handed back at shutdown)
    RUNNING = "running"  #: a worker owns it
    ERROR = "error"  #: ended by a failure; the reason is in the job's log
    STOPPED = "stopped"  #: ended by a stop request
    FINISHED = "finished"  #: ended with its work done
    CANCELED = "canceled"  #: ended because it was no longer wanted
    RETRYING = "retrying"  #: waiting until ``next_attempt_at`` to run again
    CONTINUE = "_continue"  #: handler result: take the only transition out of this state


#: Statuses a job never leaves.
TERMINAL = frozenset({Status.ERROR, Status.STOPPED, Status.FINISHED, Status.CANCELED})
#: Statuses of a job that still has work to do.
ACTIVE = frozenset({Status.PENDING, Status.RUNNING, Status.RETRYING})
