"""A stateful property test of the engine: random submits, stops, gates, retryable
failures, worker crashes and restarts against a real ``JobService`` on a SQLite file.

Jobs are of one scripted kind: each job's params carry a list of actions, one per
step (``step``, ``retry``: a RetryableError, ``gate``: wait until the test opens the
job's gate, ``crash``: a failure whose ``error`` status cannot be written, so the
worker dies and its pool replaces it); after the last action the job finishes.

What is observed, without changing the engine:

- every step, with its job, its worker thread, the job's status in the database when
  it began and how it ended (the steps themselves record it);
- every status write, from the database itself: a trigger copies each insert and
  each ``UPDATE`` of a job's status into a table of moves (old, new);
- when each stop was acknowledged (``JobService.stop`` returned) and what the job
  was doing then.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    precondition,
    rule,
    run_state_machine_as_test,
)
from loguru import logger
from waiting import wait_until

from actors import JobService
from model.db import ALLOWED_FROM
from model.errors import RetryableError
from model.jobs import KindJob
from model.kinds import JobKind
from model.settings import Settings
from model.sm import SM, Job, StatusUpdater
from model.status import TERMINAL, Status

KIND = "scripted"
POOL_SIZE = 2
MAX_RETRIES = 2
#: Retry delays: small, so a retrying job comes due within the test's waits.
RETRY_DELAY_S = 0.1
RETRY_DELAY_MAX_S = 0.2
MAX_JOBS = 8
MAX_RESTARTS = 2
#: A gate nobody opens fails its step after this long (a fault of the test, reported).
GATE_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 15.0
END_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 15.0

#: What one step does: return, raise a RetryableError, or crash its worker; "gate-…"
#: first waits until the test opens the job's gate ("gate" alone then returns).
ACTIONS = ("step", "retry", "crash", "gate", "gate-retry", "gate-crash")
scripts = st.lists(st.sampled_from(ACTIONS), max_size=4)


@dataclass
class StepRecord:
    job_id: int
    index: int
    action: str
    thread: str
    #: "running" until the step returns; then "next", "finished", "retry" or "crash".
    outcome: str = "running"


@dataclass
class StopAck:
    """A stop as ``JobService.stop`` acknowledged it: what it answered, and the job's
    status in the database just after."""

    answered: str
    seen: str
    step_in_progress: StepRecord | None
    #: Steps of the job that may still begin: none once the database says ``stopped``
    #: or while a step runs (the stop is then honoured when it returns); at most one
    #: when the job is between two steps (the next may already be on its way).
    more_steps_allowed: int
    steps_after: list[StepRecord] = field(default_factory=list)


class Recorder:
    """Shared by the scripted kind's steps (worker threads) and the test's thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next_index: dict[int, int] = {}
        self.in_progress: dict[int, StepRecord] = {}
        self.steps: list[StepRecord] = []
        self.blocked: set[int] = set()
        self.gates: dict[int, threading.Event] = {}
        #: Jobs up to this id have their gates open, whether they reached them yet or not.
        self.open_up_to = 0
        self.crashed: set[int] = set()
        self.stops: dict[int, StopAck] = {}
        self.violations: list[str] = []

    def gate(self, job_id: int) -> threading.Event:
        with self.lock:
            gate = self.gates.get(job_id)
            if gate is None:
                gate = self.gates[job_id] = threading.Event()
                if job_id <= self.open_up_to:
                    gate.set()
            return gate

    def open_all_gates(self, up_to: int) -> None:
        """Opens the gates of every job up to ``up_to``, reached or not."""
        with self.lock:
            self.open_up_to = max(self.open_up_to, up_to)
            gates = list(self.gates.values())
        for gate in gates:
            gate.set()

    def begin(self, job_id: int, script: list[str], status: str) -> StepRecord:
        thread = threading.current_thread().name
        with self.lock:
            index = self.next_index.get(job_id, 0)
            self.next_index[job_id] = index + 1
            action = script[index] if index < len(script) else "step"
            step = StepRecord(job_id, index, action, thread)
            other = self.in_progress.get(job_id)
            if other is not None:
                self.violations.append(
                    f"job {job_id}: step {index} ({action}) began on {thread} while step "
                    f"{other.index} ({other.action}) runs on {other.thread}"
                )
            if status != Status.RUNNING:
                self.violations.append(
                    f"job {job_id}: step {index} ({action}) began on {thread} while the "
                    f"database says {status!r}"
                )
            ack = self.stops.get(job_id)
            if ack is not None:
                ack.steps_after.append(step)
                if len(ack.steps_after) > ack.more_steps_allowed:
                    doing = (
                        f"step {ack.step_in_progress.index} was running"
                        if ack.step_in_progress is not None
                        else "no step was running"
                    )
                    self.violations.append(
                        f"job {job_id}: step {index} ({action}) began on {thread} after its "
                        f"stop was acknowledged (stop answered {ack.answered!r}, then the database "
                        f"said {ack.seen!r} and {doing})"
                    )
            self.in_progress[job_id] = step
            self.steps.append(step)
        return step

    def end(self, step: StepRecord, outcome: str) -> None:
        with self.lock:
            step.outcome = outcome
            if self.in_progress.get(step.job_id) is step:
                del self.in_progress[step.job_id]

    def pass_gate(self, job_id: int) -> None:
        gate = self.gate(job_id)
        with self.lock:
            self.blocked.add(job_id)
        try:
            if not gate.wait(GATE_TIMEOUT_S):
                with self.lock:
                    self.violations.append(f"job {job_id}: its gate stayed shut {GATE_TIMEOUT_S} s")
                raise RuntimeError("gate never opened")
        finally:
            with self.lock:
                self.blocked.discard(job_id)

    def acknowledge_stop(self, job_id: int, answered: str, seen: str) -> None:
        """``seen``: the job's status read after ``stop`` returned. A job the database
        shows waiting or stopped is not to run again; a running one may begin at most
        the one step already on its way, none if a step is running (the stop is then
        honoured when it returns). A job that had ended is not watched."""
        with self.lock:
            if job_id in self.stops or (seen in TERMINAL and seen != Status.STOPPED):
                return
            step = self.in_progress.get(job_id)
            allowed = 1 if seen == Status.RUNNING and step is None else 0
            self.stops[job_id] = StopAck(answered, seen, step, allowed)


class _ScriptedStep:
    """The ``work`` state: runs the job's next scripted action."""

    def __init__(self, job: KindJob, recorder: Recorder) -> None:
        self.job = job
        self.recorder = recorder

    def enter(self) -> str:
        job = self.job
        script = list(job.params.get("script", []))
        step = self.recorder.begin(job.id, script, job.ctx.store.status(job.table, job.id))
        outcome = step.action.removeprefix("gate-")
        try:
            if step.action.startswith("gate"):
                self.recorder.pass_gate(job.id)
            if step.action.endswith("retry"):
                raise RetryableError(f"scripted failure at step {step.index}")
            elif step.action.endswith("crash"):
                with self.recorder.lock:
                    self.recorder.crashed.add(job.id)
                raise RuntimeError(f"scripted crash at step {step.index}")
            last = step.index + 1 >= len(script)
            outcome = "finished" if last else "next"
            return Status.FINISHED.value if last else "work"
        finally:
            self.recorder.end(step, outcome)

    def exit(self) -> None:
        return None


def scripted_kind(recorder: Recorder) -> JobKind:
    class ScriptedJob(KindJob):
        """A job whose ``error`` status cannot be written after a scripted crash: the
        state machine cannot record the failure, and the worker running it dies."""

        def update_status(self, status: str) -> None:
            with recorder.lock:
                crashed = self.id in recorder.crashed
            if status == Status.ERROR and crashed:
                raise RuntimeError("database gone while recording the failure")
            super().update_status(status)

    def transitions(sm: SM, job: Job) -> None:
        assert isinstance(job, KindJob)
        work = _ScriptedStep(job, recorder)
        sm.add_transition(Status.RUNNING, "work", work)
        sm.add_transition("work", "work", work)
        sm.add_transition("work", Status.FINISHED, StatusUpdater(job, Status.FINISHED))

    return JobKind(KIND, transitions, POOL_SIZE, job_class=ScriptedJob)


def scripted_end(script: list[str]) -> str:
    """The status a job nobody stops ends in."""
    retries = 0
    for action in script:
        if action.endswith("crash"):
            return Status.ERROR
        if action.endswith("retry"):
            retries += 1
            if retries > MAX_RETRIES:
                return Status.ERROR
    return Status.FINISHED


_MOVES_SCHEMA = """
CREATE TABLE IF NOT EXISTS test_status_move (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER, old TEXT, new TEXT
);
CREATE TRIGGER IF NOT EXISTS test_status_move_insert AFTER INSERT ON job BEGIN
    INSERT INTO test_status_move (job_id, old, new) VALUES (new.id, NULL, new.status);
END;
CREATE TRIGGER IF NOT EXISTS test_status_move_update AFTER UPDATE OF status ON job BEGIN
    INSERT INTO test_status_move (job_id, old, new) VALUES (old.id, old.status, new.status);
END;
"""


class EngineMachine(RuleBasedStateMachine):
    jobs = Bundle("jobs")

    def __init__(self, folder: Path) -> None:
        super().__init__()
        folder.mkdir(parents=True)
        self.settings = Settings(
            database_url=f"sqlite:///{folder}/jobservice.db",
            log_dir=folder / "logs",
            key_path=folder / "key",
            retry_delay=RETRY_DELAY_S,
            retry_delay_max=RETRY_DELAY_MAX_S,
            max_retries=MAX_RETRIES,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        self.recorder = Recorder()
        self.kind = scripted_kind(self.recorder)
        self.scripts: dict[int, list[str]] = {}
        self.restarts = 0
        self.service: JobService | None = JobService(self.settings, [self.kind]).start()
        self.db = sqlite3.connect(folder / "jobservice.db", timeout=60, check_same_thread=False)
        self.db.executescript(_MOVES_SCHEMA)
        self.moves_seen = 0
        self.last_status: dict[int, str] = {}
        self.terminal: dict[int, str] = {}
        self.move_violations: list[str] = []

    # -- observation -------------------------------------------------------------------

    def statuses(self) -> dict[int, str]:
        return {int(i): str(s) for i, s in self.db.execute("SELECT id, status FROM job")}

    def read_moves(self) -> None:
        rows = self.db.execute(
            "SELECT seq, job_id, old, new FROM test_status_move WHERE seq > ? ORDER BY seq",
            (self.moves_seen,),
        ).fetchall()
        for seq, job_id, old, new in rows:
            self.moves_seen = seq
            move = f"job {job_id}: {old or '(inserted)'} -> {new}"
            if old is None:
                # Running: handed straight to an idle worker (see actors.handoff).
                if new not in (Status.PENDING, Status.RUNNING):
                    self.move_violations.append(f"{move}: a job is inserted pending or running")
            elif old not in ALLOWED_FROM.get(new, ()):
                self.move_violations.append(f"{move}: not allowed (ALLOWED_FROM)")
            ended = self.terminal.get(job_id)
            if ended is not None and new != ended:
                self.move_violations.append(f"{move}: the job had ended {ended!r}")
            if new in TERMINAL and ended is None:
                self.terminal[job_id] = new
            self.last_status[job_id] = new

    def running_service(self) -> JobService:
        assert self.service is not None
        return self.service

    # -- rules ---------------------------------------------------------------------------

    @precondition(lambda self: len(self.scripts) < MAX_JOBS)
    @rule(target=jobs, script=scripts)
    def submit(self, script: list[str]) -> int:
        job_id = self.running_service().submit(KIND, {"script": script})
        self.scripts[job_id] = script
        return job_id

    @rule(job_id=jobs)
    def stop(self, job_id: int) -> None:
        answered = self.running_service().stop(KIND, job_id)
        seen = self.statuses()[job_id]
        self.recorder.acknowledge_stop(job_id, answered, seen)
        event(f"stop of a job {seen}")

    @rule(job_id=jobs)
    def stop_once_it_is_retrying(self, job_id: int) -> None:
        # Waits (a little) only for a job with a retry ahead that can move now; any
        # other is stopped wherever it is.
        def waiting_is_over() -> bool:
            with self.recorder.lock:
                ahead = self.scripts[job_id][self.recorder.next_index.get(job_id, 0) :]
                held = job_id in self.recorder.blocked or len(self.recorder.blocked) >= POOL_SIZE
            status = self.statuses()[job_id]
            return (
                status in {Status.RETRYING, *TERMINAL}
                or held
                or not any(a.endswith("retry") for a in ahead)
            )

        with contextlib.suppress(AssertionError):
            wait_until(waiting_is_over, timeout=1.0)
        self.stop(job_id)

    @rule(job_id=jobs)
    def open_gate(self, job_id: int) -> None:
        self.recorder.gate(job_id).set()

    @rule()
    def let_the_engine_settle(self) -> None:
        """Waits until every job has ended, waits at its gate, or waits for a worker
        while every worker waits at a gate."""

        def quiet() -> bool:
            with self.recorder.lock:
                blocked = set(self.recorder.blocked)
            all_busy = len(blocked) >= POOL_SIZE
            return all(
                status in TERMINAL
                or job_id in blocked
                or (status in (Status.PENDING, Status.RETRYING) and all_busy)
                for job_id, status in self.statuses().items()
            )

        try:
            wait_until(quiet, SETTLE_TIMEOUT_S)
        except AssertionError:
            with self.recorder.lock:
                self.recorder.violations.append(
                    f"the engine did not settle within {SETTLE_TIMEOUT_S} s: statuses "
                    f"{self.statuses()}, waiting at a gate {sorted(self.recorder.blocked)}"
                )

    @precondition(lambda self: self.restarts < MAX_RESTARTS)
    @rule()
    def restart(self) -> None:
        # A step waiting at a gate cannot be interrupted (it stands for work that
        # returns): opening the gates lets every worker reach its next transition.
        self.recorder.open_all_gates(max(self.scripts, default=0))
        self.running_service().shutdown(SHUTDOWN_TIMEOUT_S)
        self.service = None
        with self.recorder.lock:
            if self.recorder.in_progress:
                self.recorder.violations.append(
                    f"steps still running after shutdown: {self.recorder.in_progress}"
                )
        self.restarts += 1
        self.service = JobService(self.settings, [self.kind]).start()

    # -- the invariants, over the whole run ------------------------------------------
    # Checked once every job has ended: a failure does not change which rules run, so
    # hypothesis replays the same steps while it shrinks.

    def teardown(self) -> None:
        try:
            if self.service is not None:
                self.check_every_job_ends()
        finally:
            if self.service is not None:
                self.service.shutdown(SHUTDOWN_TIMEOUT_S)
            self.recorder.open_all_gates(max(self.scripts, default=0))
            self.db.close()

    def check_every_job_ends(self) -> None:
        problems: list[str] = []
        self.recorder.open_all_gates(max(self.scripts, default=0))
        try:
            wait_until(lambda: all(s in TERMINAL for s in self.statuses().values()), END_TIMEOUT_S)
        except AssertionError:
            stuck = {i: s for i, s in self.statuses().items() if s not in TERMINAL}
            problems.append(f"jobs not ended {END_TIMEOUT_S} s after every gate opened: {stuck}")
        assert self.service is not None
        self.service.shutdown(SHUTDOWN_TIMEOUT_S)
        self.service = None
        self.read_moves()
        problems += self.move_violations
        with self.recorder.lock:
            problems += self.recorder.violations
            stops = dict(self.recorder.stops)
        final = self.statuses()
        if sorted(final) != sorted(self.scripts):
            problems.append(
                f"jobs submitted {sorted(self.scripts)}, in the database {sorted(final)}"
            )
        for job_id, status in final.items():
            if status not in TERMINAL:
                continue
            ended = self.terminal.get(job_id)
            if ended != status:
                problems.append(f"job {job_id}: holds {status!r}, its first end was {ended!r}")
            script, ack = self.scripts.get(job_id, []), stops.get(job_id)
            expected = self.expected_ends(script, ack)
            if status not in expected:
                problems.append(
                    f"job {job_id} (script {script}, stop {ack}): ended {status!r}, "
                    f"expected {' or '.join(sorted(expected))}"
                )
        assert not problems, "\n".join(problems)

    @staticmethod
    def expected_ends(script: list[str], ack: StopAck | None) -> set[str]:
        if ack is None:
            return {scripted_end(script)}
        if ack.seen != Status.RUNNING:
            return {Status.STOPPED}
        # Stopped while running: a step running when the stop came (or the one already
        # on its way) is followed by ``stopped``, whatever it returned; unless it
        # crashed its worker. A job between two steps may have ended meanwhile.
        decisive = ack.step_in_progress or (ack.steps_after[0] if ack.steps_after else None)
        if decisive is None:
            return set(TERMINAL)
        return {Status.STOPPED, Status.ERROR} if decisive.outcome == "crash" else {Status.STOPPED}


_examples = itertools.count()


def test_jobs_end_once_run_on_one_worker_at_a_time_and_never_run_after_their_stop(
    tmp_path: Path,
) -> None:
    run_state_machine_as_test(
        lambda: EngineMachine(tmp_path / f"example-{next(_examples)}"),
        settings=settings(
            max_examples=100,
            stateful_step_count=25,
            deadline=None,
            derandomize=True,
            database=None,
        ),
    )


def test_a_worker_that_dies_as_the_service_shuts_down_has_its_error_written_before_shutdown_returns(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """pykka marks a failed actor stopped before its ``on_failure`` runs: the pool
    must wait for the dying worker's last word, and the service for the pool's."""
    recorder = Recorder()
    kind = scripted_kind(recorder)
    settings_ = make_settings(max_retries=MAX_RETRIES)
    service = JobService(settings_, [kind]).start()
    job_id = service.submit(KIND, {"script": ["gate-crash"]})
    wait_until(lambda: job_id in recorder.blocked)
    pool = service._pools[KIND]
    # Hold the dying worker in its on_failure (at its "worker died" log line) until
    # shutdown has begun to stop the pool, and then as long as shutdown runs (at most
    # a second): the order a slow log write or a busy CPU gives. Shutdown must wait
    # for it; a shutdown that returns first leaves the job running.
    in_on_failure = threading.Event()
    shutdown = threading.Thread(target=service.shutdown, args=(10,))

    def hold(_message: object) -> None:
        in_on_failure.set()
        wait_until(pool.actor_stopped.is_set, timeout=10)
        shutdown.join(1.0)

    sink = logger.add(hold, level="CRITICAL", filter=lambda r: "died" in r["message"])
    try:
        recorder.open_all_gates(job_id)
        assert in_on_failure.wait(10)
        shutdown.start()
        shutdown.join(15)
        with contextlib.closing(sqlite3.connect(tmp_path / "jobservice.db")) as db:
            status = db.execute("SELECT status FROM job WHERE id = ?", (job_id,)).fetchone()
    finally:
        logger.remove(sink)
    assert status == (Status.ERROR,)
    restarted = JobService(settings_, [kind]).start()
    try:
        assert restarted.wait(KIND, job_id, 10) == Status.ERROR
        assert [step.action for step in recorder.steps] == ["gate-crash"]
    finally:
        restarted.shutdown(10)


def test_a_retry_recorded_as_the_dispatcher_stops_is_heard_and_leaves_its_pool_alive(
    make_settings: Callable[..., Settings],
) -> None:
    """As the service shuts down the dispatcher stops before its pools, which still
    record what their workers hand over: a retry among them cannot reach the
    dispatcher's timer, and must not take its pool down (a pool that died there lost
    the writes queued behind it, and a job ran again at the next start)."""
    recorder = Recorder()
    service = JobService(
        make_settings(max_retries=MAX_RETRIES, retry_delay=60, retry_delay_max=60),
        [scripted_kind(recorder)],
    ).start()
    dispatcher, pool = service._dispatcher, service._pools[KIND]
    assert dispatcher is not None
    heard: list[tuple[int, str]] = []
    # Both end in a retry, which the pool writes (a worker writes only the ends).
    first = service.submit(KIND, {"script": ["gate-retry"]})
    second = service.submit(KIND, {"script": ["gate-retry"]})

    def listener(_kind: str, job_id: int, status: str) -> None:
        heard.append((job_id, status))
        if job_id == first:  # holds the pool until the dispatcher has stopped
            wait_until(dispatcher.actor_stopped.is_set, timeout=10)

    service.add_job_listener(listener)
    try:
        wait_until(lambda: recorder.blocked == {first, second})
        recorder.gate(first).set()
        wait_until(lambda: (first, Status.RETRYING) in heard)
        recorder.gate(second).set()
        # The second job's retry is handed over behind the held pool.
        wait_until(lambda: not pool.actor_inbox.empty())
        dispatcher.stop(block=True, timeout=15)
        assert (second, Status.RETRYING) in heard
        assert service.store.status("job", second) == Status.RETRYING
    finally:
        service.shutdown(10)
