"""Job kinds the acceptance tests load into ``jobservice worker`` and ``serve`` through
the ``kind_modules`` setting (this folder on ``PYTHONPATH``).

- ``worker_kinds:recorder`` (a :class:`JobKind`): a ``recorder`` job appends
  ``"<job id> <pid>"`` to the file ``params["record"]`` and finishes.
- ``worker_kinds:busy_kinds`` (a callable taking the settings): ``looping`` jobs
  record their first step the same way, then step until the service lets go of them
  (their pool is as large as ``scan_workers``); ``gated`` jobs record, then wait in
  their first step for the file ``params["gate"]``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from model.jobs import KindJob
from model.kinds import JobKind
from model.settings import Settings
from model.sm import CONTINUE, SM, Job, StatusUpdater
from model.status import Status

__all__ = ["busy_kinds", "recorder"]

#: Seconds one step of a ``looping`` job takes.
LOOP_STEP_S = 0.05
#: Seconds a ``gated`` job waits for its gate at most.
GATE_TIMEOUT_S = 120.0


def _record(job: KindJob) -> None:
    with open(job.params["record"], "a") as record:
        record.write(f"{job.id} {os.getpid()}\n")


class _Record:
    def __init__(self, job: KindJob) -> None:
        self.job = job

    def enter(self) -> str:
        _record(self.job)
        return CONTINUE

    def exit(self) -> None:
        return None


class _Loop:
    """Each step waits a little and goes round again: only the service's release ends it."""

    def __init__(self, job: KindJob) -> None:
        self.job = job
        self.steps = 0

    def enter(self) -> str:
        if self.steps == 0:
            _record(self.job)
        self.steps += 1
        threading.Event().wait(LOOP_STEP_S)
        return "loop"

    def exit(self) -> None:
        return None


class _Gate:
    def __init__(self, job: KindJob) -> None:
        self.job = job

    def enter(self) -> str:
        _record(self.job)
        gate = Path(self.job.params["gate"])
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while not gate.exists() and time.monotonic() < deadline:
            threading.Event().wait(0.02)
        return CONTINUE

    def exit(self) -> None:
        return None


def _recorder_transitions(sm: SM, job: Job) -> None:
    assert isinstance(job, KindJob)
    sm.add_transition(Status.RUNNING, "record", _Record(job))
    sm.add_transition("record", Status.FINISHED, StatusUpdater(job, Status.FINISHED))


def _looping_transitions(sm: SM, job: Job) -> None:
    assert isinstance(job, KindJob)
    loop = _Loop(job)
    sm.add_transition(Status.RUNNING, "loop", loop)
    sm.add_transition("loop", "loop", loop)


def _gated_transitions(sm: SM, job: Job) -> None:
    assert isinstance(job, KindJob)
    sm.add_transition(Status.RUNNING, "gate", _Gate(job))
    sm.add_transition("gate", Status.FINISHED, StatusUpdater(job, Status.FINISHED))


recorder = JobKind("recorder", _recorder_transitions, 2)


def busy_kinds(settings: Settings) -> list[JobKind]:
    return [
        JobKind("looping", _looping_transitions, settings.scan_workers),
        JobKind("gated", _gated_transitions, 1),
    ]
