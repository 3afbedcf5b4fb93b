"""Job kinds the engine tests register, and what they record."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from model.errors import RetryableError, StopRequested
from model.interrupt import current
from model.jobs import KindJob
from model.kinds import JobKind
from model.sm import CONTINUE, SM, Job, StateHandler, StatusUpdater
from model.status import Status


@dataclass
class Tracker:
    """Shared by the test and the handlers: what ran, how many at once, gates."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    running: int = 0
    most_at_once: int = 0
    ticks: dict[int, int] = field(default_factory=dict)
    finished: list[int] = field(default_factory=list)
    started: threading.Condition = field(default_factory=threading.Condition)
    gate: threading.Event = field(default_factory=threading.Event)

    def enter(self, job_id: int) -> None:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        with self.started:
            self.started.notify_all()

    def leave(self) -> None:
        with self.lock:
            self.running -= 1

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
        with self.started:
            return self.started.wait_for(predicate, timeout)

    def tick(self, job_id: int) -> int:
        with self.lock:
            self.ticks[job_id] = self.ticks.get(job_id, 0) + 1
            n = self.ticks[job_id]
        with self.started:
            self.started.notify_all()
        return n


class _Noop:
    def __init__(self, job: Job) -> None:
        self.job = job

    def enter(self) -> str:
        return CONTINUE

    def exit(self) -> None:
        return None


def noop_transitions(sm: SM, job: Job) -> None:
    sm.add_transition(Status.RUNNING, "work", _Noop(job))
    sm.add_transition("work", Status.FINISHED, StatusUpdater(job, Status.FINISHED))


class _Tick:
    """One step of a multi-step job: ``params["ticks"]`` steps, each one transition.
    With ``params["hold"]`` the job's first step waits for the tracker's gate."""

    def __init__(self, job: KindJob, tracker: Tracker) -> None:
        self.job = job
        self.tracker = tracker
        self.entered = False

    def enter(self) -> str:
        if not self.entered:
            self.entered = True
            self.tracker.enter(self.job.id)
        n = self.tracker.tick(self.job.id)
        if self.job.params.get("hold") and n == 1:
            self.tracker.gate.wait(30)
        if n >= int(self.job.params.get("ticks", 1)):
            return Status.FINISHED.value
        return "tick"

    def exit(self) -> None:
        if self.entered:
            self.entered = False
            self.tracker.leave()


class _FinishRecorder(StatusUpdater):
    def __init__(self, job: Job, tracker: Tracker) -> None:
        super().__init__(job, Status.FINISHED)
        object.__setattr__(self, "tracker", tracker)

    def enter(self) -> str:
        result = super().enter()
        tracker: Tracker = object.__getattribute__(self, "tracker")
        with tracker.lock:
            tracker.finished.append(self.job.id)
        return result


def tick_kind(name: str, tracker: Tracker, pool_size: int = 2) -> JobKind:
    def transitions(sm: SM, job: Job) -> None:
        assert isinstance(job, KindJob)
        tick = _Tick(job, tracker)
        sm.add_transition(Status.RUNNING, "tick", tick)
        sm.add_transition("tick", "tick", tick)
        sm.add_transition("tick", Status.FINISHED, _FinishRecorder(job, tracker))

    return JobKind(name, transitions, pool_size)


class _Flaky:
    """Fails with a retryable error until the job has been retried
    ``params["fail_times"]`` times."""

    def __init__(self, job: KindJob) -> None:
        self.job = job

    def enter(self) -> str:
        if self.job.attempts < int(self.job.params.get("fail_times", 0)):
            raise RetryableError(f"registry unreachable (attempt {self.job.attempts + 1})")
        return Status.FINISHED.value

    def exit(self) -> None:
        return None


def _one_step_kind(name: str, work: Callable[[KindJob], StateHandler], pool_size: int) -> JobKind:
    """running → work → finished, ``work(job)`` the handler of the one step."""

    def transitions(sm: SM, job: Job) -> None:
        assert isinstance(job, KindJob)
        sm.add_transition(Status.RUNNING, "work", work(job))
        sm.add_transition("work", Status.FINISHED, StatusUpdater(job, Status.FINISHED))

    return JobKind(name, transitions, pool_size)


def flaky_kind(name: str = "flaky", pool_size: int = 2) -> JobKind:
    return _one_step_kind(name, _Flaky, pool_size)


@dataclass
class Gate:
    """Holds the steps of gated jobs until the test opens it; counts runs per job."""

    opened: threading.Event = field(default_factory=threading.Event)
    runs: dict[int, int] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def entered(self, job_id: int) -> None:
        with self.changed:
            self.runs[job_id] = self.runs.get(job_id, 0) + 1
            self.changed.notify_all()

    def wait_running(self, count: int, timeout: float = 20.0) -> bool:
        """Waits until ``count`` jobs have entered their step."""
        with self.changed:
            return self.changed.wait_for(lambda: len(self.runs) >= count, timeout)


class _Gated:
    """Waits for the gate, then finishes, or with ``params["then"] == "retryable"``
    fails with a retryable error. With ``params["interruptible"]`` it waits on the
    worker's interrupt instead of the gate: a stop ends the wait."""

    def __init__(self, job: KindJob, gate: Gate) -> None:
        self.job = job
        self.gate = gate

    def enter(self) -> str:
        self.gate.entered(self.job.id)
        if self.job.params.get("interruptible"):
            interrupt = current()
            assert interrupt is not None, "a worker's thread has an interrupt"
            if interrupt.wait(30):
                raise StopRequested(self.job.id)
        else:
            self.gate.opened.wait(30)
        if self.job.params.get("then") == "retryable":
            raise RetryableError("registry unreachable")
        return CONTINUE

    def exit(self) -> None:
        return None


def gated_kind(name: str, gate: Gate, pool_size: int = 2) -> JobKind:
    return _one_step_kind(name, lambda job: _Gated(job, gate), pool_size)


class CrashingJob(KindJob):
    """A job whose ``error`` status cannot be written: when its handler fails, the
    state machine cannot record it, and the worker running it dies."""

    def update_status(self, status: str) -> None:
        if status == Status.ERROR and self.params.get("crash"):
            raise RuntimeError("database gone while recording the failure")
        super().update_status(status)


class _Boom:
    def __init__(self, job: KindJob, tracker: Tracker) -> None:
        self.job = job
        self.tracker = tracker

    def enter(self) -> str:
        if self.job.params.get("crash"):
            raise ValueError("handler failed")
        return "tick"

    def exit(self) -> None:
        return None


def crash_kind(name: str, tracker: Tracker, pool_size: int = 2) -> JobKind:
    def transitions(sm: SM, job: Job) -> None:
        assert isinstance(job, KindJob)
        tick = _Tick(job, tracker)
        sm.add_transition(Status.RUNNING, "boom", _Boom(job, tracker))
        sm.add_transition("boom", "tick", tick)
        sm.add_transition("boom", Status.FINISHED, _FinishRecorder(job, tracker))
        sm.add_transition("tick", "tick", tick)
        sm.add_transition("tick", Status.FINISHED, _FinishRecorder(job, tracker))

    return JobKind(name, transitions, pool_size, job_class=CrashingJob)


class _EndedElsewhere:
    """Sets the job's own row ``canceled`` behind the engine's back (as another program
    editing the database would), then carries on to ``finished``."""

    def __init__(self, job: KindJob) -> None:
        self.job = job

    def enter(self) -> str:
        self.job.ctx.store.set_status(self.job.table, self.job.id, Status.CANCELED)
        return Status.FINISHED.value

    def exit(self) -> None:
        return None


def ended_elsewhere_kind(name: str = "elsewhere", pool_size: int = 1) -> JobKind:
    return _one_step_kind(name, _EndedElsewhere, pool_size)
