"""Job kinds the several-nodes tests load into ``jobservice serve`` and ``worker``
(``kind_modules = ["node_kinds:kinds"]``, this folder on ``PYTHONPATH``).

Every kind records in the table ``runs`` of the service's own database (made by the
tests, :data:`RUNS_TABLE`) a row per event of a job: ``start`` when its body starts,
``end`` when it ends, with the node's process id. So a test reads, from the database,
which node ran each job and how many times.

- ``counted``: one step of ``params["ms"]`` milliseconds of work, recorded.
- ``held``: records its start, then goes round (a transition every 20 ms, so a stop or
  a shutdown finds it between two) until the file ``params["gate"]`` exists; then
  records its end.
- ``flaky``: fails with a retryable error (recorded as ``fail``) until it has been
  retried ``params["fail_times"]`` times; then records its end.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import sqlalchemy as sa

from model.errors import RetryableError
from model.interrupt import current
from model.jobs import KindJob
from model.kinds import JobKind
from model.settings import Settings
from model.sm import SM, Job, StatusUpdater
from model.status import Status

__all__ = ["kinds", "runs_table"]


def runs_table(url: str) -> str:
    """The statement that makes the table ``runs`` in the database at ``url``."""
    key = "INTEGER PRIMARY KEY" if url.startswith("sqlite") else "SERIAL PRIMARY KEY"
    return (
        f"CREATE TABLE runs (id {key}, job_id INTEGER NOT NULL, "
        "event VARCHAR(16) NOT NULL, pid INTEGER NOT NULL)"
    )


#: Seconds between two rounds of a ``held`` job.
HOLD_STEP_S = 0.02


def record(job: KindJob, event: str) -> None:
    """Records ``event``; the database out of reach (a restart) is worth a retry."""
    try:
        with job.ctx.store.engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO runs (job_id, event, pid) VALUES (:job, :event, :pid)"),
                {"job": job.id, "event": event, "pid": os.getpid()},
            )
    except sa.exc.OperationalError as exc:
        raise RetryableError(f"cannot record {event}: {exc}") from exc


def pause(seconds: float) -> None:
    """The job's work: waits ``seconds``, less when it is asked to stop."""
    interrupt = current()
    if interrupt is not None:
        interrupt.wait(seconds)
    else:
        threading.Event().wait(seconds)


class _Work:
    def __init__(self, job: KindJob) -> None:
        self.job = job

    def enter(self) -> str:
        record(self.job, "start")
        pause(int(self.job.params.get("ms", 5)) / 1000)
        record(self.job, "end")
        return Status.FINISHED.value

    def exit(self) -> None:
        return None


class _Hold:
    def __init__(self, job: KindJob) -> None:
        self.job = job
        self.rounds = 0

    def enter(self) -> str:
        if self.rounds == 0:
            record(self.job, "start")
        self.rounds += 1
        if Path(self.job.params["gate"]).exists():
            record(self.job, "end")
            return Status.FINISHED.value
        pause(HOLD_STEP_S)
        return "hold"

    def exit(self) -> None:
        return None


class _Flaky:
    def __init__(self, job: KindJob) -> None:
        self.job = job

    def enter(self) -> str:
        if self.job.attempts < int(self.job.params.get("fail_times", 1)):
            record(self.job, "fail")
            raise RetryableError(f"registry unreachable (attempt {self.job.attempts + 1})")
        record(self.job, "end")
        return Status.FINISHED.value

    def exit(self) -> None:
        return None


def _counted(sm: SM, job: Job) -> None:
    assert isinstance(job, KindJob)
    sm.add_transition(Status.RUNNING, "work", _Work(job))
    sm.add_transition("work", Status.FINISHED, StatusUpdater(job, Status.FINISHED))


def _held(sm: SM, job: Job) -> None:
    assert isinstance(job, KindJob)
    hold = _Hold(job)
    sm.add_transition(Status.RUNNING, "hold", hold)
    sm.add_transition("hold", "hold", hold)
    sm.add_transition("hold", Status.FINISHED, StatusUpdater(job, Status.FINISHED))


def _flaky(sm: SM, job: Job) -> None:
    assert isinstance(job, KindJob)
    sm.add_transition(Status.RUNNING, "work", _Flaky(job))
    sm.add_transition("work", Status.FINISHED, StatusUpdater(job, Status.FINISHED))


def kinds(settings: Settings) -> list[JobKind]:
    return [
        JobKind("counted", _counted, settings.scan_workers),
        JobKind("held", _held, settings.scan_workers),
        JobKind("flaky", _flaky, 1),
    ]
