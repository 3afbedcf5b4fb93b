from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from loguru import Logger

from model.errors import RetryableError, TransitionError
from model.joblog import JobLogSink, job_logger
from model.sm import CONTINUE, SM, MachineBroken, Retry, RetryPolicy, StatusUpdater
from model.status import Status


class FakeJob:
    """An in-memory job with a real log file."""

    def __init__(self, job_id: int, sink: JobLogSink, folder: Path) -> None:
        self._id = job_id
        self._log_path = str(folder / f"job_{job_id}.log")
        self._sink = sink
        self._logger = job_logger(sink, self._log_path, job_id=job_id, job_type="fake")
        self.statuses: list[str] = []
        self.attempts = 0
        #: (delay_s, count_attempt) of each retry scheduled.
        self.retries: list[tuple[float, bool]] = []
        self.inited = False
        self.fail_status: str | None = None

    @property
    def id(self) -> int:
        return self._id

    @property
    def type(self) -> str:
        return "fake"

    @property
    def log_path(self) -> str:
        return self._log_path

    @property
    def logger(self) -> Logger:
        return self._logger

    def log_state(self, state: str, previous: str) -> None:
        self._sink.write_line(self._log_path, "INFO", f"state {state} (from {previous})")

    def update_status(self, status: str) -> None:
        if status == self.fail_status:
            raise RuntimeError(f"cannot write status {status}")
        self.statuses.append(status)

    def get_status(self) -> str:
        return self.statuses[-1] if self.statuses else Status.PENDING

    def init(self) -> None:
        self.inited = True

    def schedule_retry(self, delay_s: float, count_attempt: bool) -> datetime:
        self.retries.append((delay_s, count_attempt))
        self.update_status(Status.RETRYING)
        return datetime.now(UTC) + timedelta(seconds=delay_s)

    def log(self) -> str:
        assert self._sink.flush()
        return Path(self._log_path).read_text()


class Recorder:
    """A handler that records enter/exit calls into a shared list."""

    def __init__(self, name: str, calls: list[str], result: str | Any = CONTINUE) -> None:
        self.name = name
        self.calls = calls
        self.result = result

    def enter(self) -> str:
        self.calls.append(f"enter {self.name}")
        if isinstance(self.result, BaseException):
            raise self.result
        return str(self.result)

    def exit(self) -> None:
        self.calls.append(f"exit {self.name}")


@pytest.fixture
def sink() -> Iterator[JobLogSink]:
    sink = JobLogSink()
    sink.install()
    yield sink
    sink.remove()


@pytest.fixture
def job(sink: JobLogSink, tmp_path: Path) -> FakeJob:
    return FakeJob(7, sink, tmp_path)


def machine(job: FakeJob, build: Any = None) -> SM:
    sm = SM()
    sm.reset(job, build or (lambda sm, job: None))
    return sm


def test_reset_initialises_the_job_and_adds_the_common_transitions(job: FakeJob) -> None:
    sm = machine(job)
    assert job.inited
    assert sm.current_state == Status.PENDING
    assert sm.transitions[Status.PENDING] == {Status.RUNNING}
    assert sm.transitions[Status.RETRYING] == {Status.RUNNING}
    assert set(sm.forced_states) == {Status.ERROR, Status.STOPPED, Status.CANCELED, Status.RETRYING}


def test_start_runs_enter_and_exit_in_order_until_a_terminal_status_holds(job: FakeJob) -> None:
    calls: list[str] = []

    def build(sm: SM, job: FakeJob) -> None:
        sm.add_transition(Status.RUNNING, "a", Recorder("a", calls))
        sm.add_transition("a", "b", Recorder("b", calls, Status.FINISHED))
        sm.add_transition("b", Status.FINISHED, StatusUpdater(job, Status.FINISHED))

    sm = machine(job, build)
    sm.start(Status.RUNNING)
    assert calls == ["enter a", "exit a", "enter b", "exit b"]
    assert job.statuses == [Status.RUNNING, Status.FINISHED]
    assert sm.current_state == Status.FINISHED
    assert sm.previous_state == "b"
    assert sm.holding


def test_continue_with_several_ways_out_lands_in_error(job: FakeJob) -> None:
    calls: list[str] = []

    def build(sm: SM, job: FakeJob) -> None:
        sm.add_transition(Status.RUNNING, "fork", Recorder("fork", calls))
        sm.add_transition("fork", "left", Recorder("left", calls))
        sm.add_transition("fork", "right", Recorder("right", calls))

    sm = machine(job, build)
    sm.start(Status.RUNNING)
    assert job.statuses == [Status.RUNNING, Status.ERROR]
    assert "enter left" not in calls and "enter right" not in calls
    assert "_continue needs exactly one way out, there are 2" in job.log()


def test_continue_with_no_way_out_lands_in_error(job: FakeJob) -> None:
    def build(sm: SM, job: FakeJob) -> None:
        sm.add_transition(Status.RUNNING, "dead-end", Recorder("dead-end", []))

    sm = machine(job, build)
    sm.start(Status.RUNNING)
    assert job.statuses[-1] == Status.ERROR
    assert sm.current_state == Status.ERROR


def test_an_empty_next_state_holds_the_machine(job: FakeJob) -> None:
    calls: list[str] = []

    def build(sm: SM, job: FakeJob) -> None:
        sm.add_transition(Status.RUNNING, "handed-off", Recorder("handed-off", calls, ""))
        sm.add_transition("handed-off", "never", Recorder("never", calls))

    sm = machine(job, build)
    sm.start(Status.RUNNING)
    assert calls == ["enter handed-off"]
    assert sm.current_state == "handed-off"
    assert sm.holding
    assert not sm.step()


@pytest.mark.parametrize(
    "failure",
    [
        ValueError("bad value"),
        AssertionError("invariant broken"),
        KeyboardInterrupt(),
        SystemExit(3),
    ],
    ids=["exception", "failed-assertion", "keyboard-interrupt", "system-exit"],
)
def test_any_failure_in_enter_lands_in_error_with_the_traceback_logged(
    job: FakeJob, failure: BaseException
) -> None:
    def build(sm: SM, job: FakeJob) -> None:
        sm.add_transition(Status.RUNNING, "work", Recorder("work", [], failure))

    sm = machine(job, build)
    sm.start(Status.RUNNING)
    assert job.statuses == [Status.RUNNING, Status.ERROR]
    assert sm.current_state == Status.ERROR
    log = job.log()
    assert "Traceback" in log
    assert type(failure).__name__ in log


def test_a_failure_in_exit_lands_in_error(job: FakeJob) -> None:
    class BadExit(Recorder):
        def exit(self) -> None:
            raise OSError("cannot release")

    def build(sm: SM, job: FakeJob) -> None:
        sm.add_transition(Status.RUNNING, "a", BadExit("a", []))
        sm.add_transition("a", "b", Recorder("b", []))

    sm = machine(job, build)
    sm.start(Status.RUNNING)
    assert job.statuses[-1] == Status.ERROR
    assert "cannot release" in job.log()


def test_a_retryable_failure_enters_retrying_which_schedules_the_retry(job: FakeJob) -> None:
    sm = SM()
    sm.reset(
        job,
        lambda sm, j: sm.add_transition(
            Status.RUNNING, "pull", Recorder("pull", [], RetryableError("down"))
        ),
        retry_policy=RetryPolicy(10, 100, 3),
    )
    sm.start(Status.RUNNING)
    assert job.statuses == [Status.RUNNING, Status.RETRYING]
    assert job.retries == [(10, True)]
    assert sm.current_state == Status.RETRYING
    assert "retry 1 of 3" in job.log()


def test_retry_backs_off_exponentially_up_to_the_limit() -> None:
    policy = RetryPolicy(delay_s=2, delay_max_s=10, max_retries=9)
    assert [policy.delay(n) for n in range(5)] == [2, 4, 8, 10, 10]
    assert policy.delay(0, asked_s=7) == 7


def test_retry_after_the_last_attempt_ends_in_error(job: FakeJob) -> None:
    job.attempts = 2
    sm = SM()
    sm.reset(job, lambda sm, j: None)
    retry = Retry(job, sm, RetryPolicy(1, 1, 2))
    sm.last_error = RetryableError("registry down")
    assert retry.enter() == ""
    assert job.statuses == [Status.ERROR]
    assert "giving up after 2 retries; last failure: registry down" in job.log()


def test_stop_replaces_the_next_state_at_the_next_transition(job: FakeJob) -> None:
    calls: list[str] = []

    def build(sm: SM, job: FakeJob) -> None:
        sm.add_transition(Status.RUNNING, "a", Recorder("a", calls))
        sm.add_transition("a", "b", Recorder("b", calls))
        sm.add_transition("b", Status.FINISHED, StatusUpdater(job, Status.FINISHED))

    sm = machine(job, build)
    sm.begin(Status.RUNNING)
    assert sm.step()  # running
    assert sm.step()  # a
    assert sm.stop(job.id)
    assert not sm.step()  # stopped instead of b
    assert calls == ["enter a", "exit a"]
    assert sm.current_state == Status.STOPPED
    assert job.statuses == [Status.RUNNING, Status.STOPPED]


def test_stop_is_ignored_when_the_machine_runs_another_job(
    job: FakeJob, sink: JobLogSink, tmp_path: Path
) -> None:
    other = FakeJob(8, sink, tmp_path)
    sm = machine(job, lambda sm, j: sm.add_transition(Status.RUNNING, "a", Recorder("a", [], "")))
    sm.reset(other, lambda sm, j: sm.add_transition(Status.RUNNING, "a", Recorder("a", [], "")))
    assert not sm.stop(job.id)
    sm.start(Status.RUNNING)
    assert other.statuses == [Status.RUNNING]
    assert sm.current_state == "a"


def test_step_takes_exactly_one_transition(job: FakeJob) -> None:
    calls: list[str] = []

    def build(sm: SM, job: FakeJob) -> None:
        sm.add_transition(Status.RUNNING, "a", Recorder("a", calls))
        sm.add_transition("a", Status.FINISHED, StatusUpdater(job, Status.FINISHED))

    sm = machine(job, build)
    sm.begin(Status.RUNNING)
    assert sm.step() and sm.current_state == Status.RUNNING and calls == []
    assert sm.step() and sm.current_state == "a" and calls == ["enter a"]
    assert not sm.step() and sm.current_state == Status.FINISHED


def test_enter_state_refuses_a_transition_the_table_lacks(job: FakeJob) -> None:
    sm = machine(job, lambda sm, j: sm.add_transition(Status.RUNNING, "a", Recorder("a", [])))
    with pytest.raises(TransitionError, match="no transition from 'pending' to 'a'"):
        sm.enter_state("a")


def test_forced_states_are_entered_from_anywhere(job: FakeJob) -> None:
    sm = machine(job)
    for state in (Status.CANCELED, Status.STOPPED, Status.ERROR):
        sm.current_state = "somewhere"
        assert sm.enter_state(state) == ""
    assert job.statuses == [Status.CANCELED, Status.STOPPED, Status.ERROR]


def test_remove_transition_takes_a_way_out_away(job: FakeJob) -> None:
    calls: list[str] = []

    def build(sm: SM, job: FakeJob) -> None:
        sm.add_transition(Status.RUNNING, "a", Recorder("a", calls))
        sm.add_transition("a", "b", Recorder("b", calls, ""))
        sm.add_transition("a", "c", Recorder("c", calls, ""))
        sm.remove_transition("a", "c")

    sm = machine(job, build)
    sm.start(Status.RUNNING)
    assert sm.current_state == "b"
    sm.remove_transition("b", "nowhere")  # removing what is not there is harmless


def test_every_entered_state_is_logged_with_its_time(job: FakeJob) -> None:
    def build(sm: SM, job: FakeJob) -> None:
        sm.add_transition(Status.RUNNING, "a", Recorder("a", []))
        sm.add_transition("a", Status.FINISHED, StatusUpdater(job, Status.FINISHED))

    machine(job, build).start(Status.RUNNING)
    lines = job.log().splitlines()
    states = [line.split("state ")[1].split(" ")[0] for line in lines if "] state " in line]
    assert states == [Status.RUNNING, "a", Status.FINISHED]
    for line in lines:
        datetime.fromisoformat(line.split(" ")[0])


def test_a_machine_that_cannot_record_its_failure_is_broken(job: FakeJob) -> None:
    job.fail_status = Status.ERROR
    sm = machine(
        job,
        lambda sm, j: sm.add_transition(Status.RUNNING, "a", Recorder("a", [], ValueError("x"))),
    )
    sm.begin(Status.RUNNING)
    sm.step()
    with pytest.raises(MachineBroken, match="cannot enter error"):
        sm.step()


def test_reset_clears_the_previous_jobs_table(
    job: FakeJob, sink: JobLogSink, tmp_path: Path
) -> None:
    sm = machine(job, lambda sm, j: sm.add_transition(Status.RUNNING, "a", Recorder("a", [])))
    sm.desired_state = Status.STOPPED
    sm.reset(FakeJob(9, sink, tmp_path), lambda sm, j: None)
    assert "a" not in sm.handlers
    assert sm.desired_state == ""
    assert sm.current_job is not None and sm.current_job.id == 9


def test_the_common_states_set_the_status_of_the_job_the_machine_runs_now(
    job: FakeJob, sink: JobLogSink, tmp_path: Path
) -> None:
    sm = machine(job)
    sm.start(Status.CANCELED)
    second = FakeJob(9, sink, tmp_path)
    sm.reset(second, lambda sm, j: None)
    sm.start(Status.RUNNING)  # no way out of running: error
    assert job.statuses == [Status.CANCELED]
    assert second.statuses == [Status.RUNNING, Status.ERROR]


def test_a_failing_state_is_named_in_the_log_and_its_exit_releases_it(job: FakeJob) -> None:
    calls: list[str] = []

    def build(sm: SM, job: FakeJob) -> None:
        sm.add_transition(Status.RUNNING, "a", Recorder("a", calls))
        sm.add_transition("a", "b", Recorder("b", calls, OSError("disk full")))

    sm = machine(job, build)
    sm.start(Status.RUNNING)
    assert calls == ["enter a", "exit a", "enter b", "exit b"]
    assert "state b failed: OSError('disk full')" in job.log()
    assert sm.current_state == Status.ERROR


def test_a_retryable_failure_that_made_progress_is_retried_without_counting_an_attempt(
    job: FakeJob,
) -> None:
    job.attempts = 2
    sm = SM()
    sm.reset(job, lambda sm, j: None)
    retry = Retry(job, sm, RetryPolicy(1, 1, 2))
    sm.last_error = RetryableError("connection reset", progress=True)
    assert retry.enter() == ""
    assert job.retries == [(1, False)]
    assert Status.ERROR not in job.statuses
    assert "not counted" in job.log()


def test_a_stop_requested_from_another_thread_while_a_handler_runs_wins_over_its_failure(
    job: FakeJob,
) -> None:
    sm = SM()

    class StoppedMidway:
        def enter(self) -> str:
            stopper = threading.Thread(target=sm.stop, args=(job.id,))
            stopper.start()
            stopper.join(5)
            raise RetryableError("registry unreachable")

        def exit(self) -> None:
            return None

    sm.reset(
        job,
        lambda sm, j: sm.add_transition(Status.RUNNING, "pull", StoppedMidway()),
        retry_policy=RetryPolicy(),
    )
    sm.start(Status.RUNNING)
    assert job.statuses == [Status.RUNNING, Status.STOPPED]
    assert sm.current_state == Status.STOPPED
    assert "state pull ended by the stop request" in job.log()


def test_wrap_handlers_replaces_the_handlers_of_the_states_that_have_one(job: FakeJob) -> None:
    calls: list[str] = []
    sm = machine(job, lambda sm, j: sm.add_transition(Status.RUNNING, "a", Recorder("a", calls)))
    inner = Recorder("wrapped a", calls)
    seen: list[str] = []

    def wrap(state: str, handler: Any) -> Any:
        seen.append(state)
        return inner

    sm.wrap_handlers(["a", "no-such-state"], wrap)
    assert seen == ["a"]
    sm.begin(Status.RUNNING)
    sm.step()
    sm.step()
    assert calls == ["enter wrapped a"]
    assert sm.current_state == "a"
