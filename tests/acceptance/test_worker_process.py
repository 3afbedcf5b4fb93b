"""``jobservice worker`` as an operator runs it: the installed console script in a
subprocess on a temporary SQLite file, its extra kinds loaded from ``kind_modules``
(tests/acceptance/worker_kinds.py), jobs queued by another process through the store
(before the worker starts, or while it runs: its poll finds them). Several nodes on
one database are tests/acceptance/test_nodes.py's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_serve import JOBSERVICE, START_TIMEOUT_S, Served
from waiting import wait_until

from model.db import Store

HERE = Path(__file__).resolve().parent
#: Seconds a job of the test kinds may take.
JOB_TIMEOUT_S = 30.0
#: Seconds a stopping worker may take to exit (its shutdown_timeout is below).
EXIT_TIMEOUT_S = 30.0
KIND_MODULES = ["worker_kinds:recorder", "worker_kinds:busy_kinds"]


class Worker(Served):
    """``jobservice worker`` in a subprocess, with its files under ``root`` and this
    folder on its ``PYTHONPATH`` (for ``worker_kinds``)."""

    def __init__(self, root: Path, command: str = "worker", **settings: Any) -> None:
        super().__init__(root, **settings)
        self.command = command
        self.log_path = root / f"{self.command}.log"
        self.database_url = self.env["JOBSERVICE_DATABASE_URL"]
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
        )

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(JOBSERVICE), self.command],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def started() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited {self.process.returncode}: {self.log()}")
            return "jobservice worker " in self.log()

        wait_until(started, timeout=START_TIMEOUT_S)

    def queue(self, kind: str, *params: dict[str, Any]) -> list[int]:
        """Queues jobs as another process would: through the store, not this worker."""
        store = Store(self.database_url)
        try:
            return store.insert_jobs("job", [{"kind": kind, "params": p} for p in params])
        finally:
            store.close()

    def status(self, job_id: int) -> str:
        store = Store(self.database_url)
        try:
            return store.status("job", job_id)
        finally:
            store.close()


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    node = Worker(
        tmp_path / "worker",
        kind_modules=json.dumps(KIND_MODULES),
        shutdown_timeout=20,
        scan_workers=2,
    )
    node.root.mkdir()
    node.upgrade()
    yield node
    node.stop()


def recorded(path: Path) -> list[tuple[int, int]]:
    """The (job id, pid) lines a test kind's jobs wrote."""
    if not path.exists():
        return []
    return [
        (int(job), int(pid))
        for job, pid in (line.split() for line in path.read_text().splitlines() if line)
    ]


def test_a_worker_runs_jobs_of_its_kind_modules_queued_by_another_process(
    worker: Worker, tmp_path: Path
) -> None:
    record = tmp_path / "record"
    ids = worker.queue("recorder", *({"record": str(record)} for _ in range(5)))
    worker.start()
    assert worker.process is not None
    pid = worker.process.pid
    wait_until(lambda: all(worker.status(i) == "finished" for i in ids), timeout=JOB_TIMEOUT_S)
    assert sorted(recorded(record)) == [(i, pid) for i in ids]
    log = worker.log()
    start_line = next(line for line in log.splitlines() if "jobservice worker " in line)
    assert "recorder 2" in start_line and "looping 2" in start_line and "gated 1" in start_line
    assert f"database {worker.database_url}" in start_line
    assert "listening" not in log  # no HTTP API
    worker.signal(signal.SIGTERM)
    assert worker.wait(EXIT_TIMEOUT_S) == 0


def test_a_running_worker_finds_a_job_queued_by_another_process_at_its_next_poll(
    tmp_path: Path,
) -> None:
    node = Worker(tmp_path / "worker", kind_modules="worker_kinds:recorder", poll_interval=0.2)
    node.root.mkdir()
    node.upgrade()
    record = tmp_path / "record"
    node.start()
    try:
        [job_id] = node.queue("recorder", {"record": str(record)})
        wait_until(lambda: node.status(job_id) == "finished", timeout=JOB_TIMEOUT_S)
        assert node.process is not None
        assert recorded(record) == [(job_id, node.process.pid)]
        node.signal(signal.SIGTERM)
        assert node.wait(EXIT_TIMEOUT_S) == 0
    finally:
        node.stop()


def test_sigterm_hands_the_workers_running_job_back_pending_and_exits_0(
    worker: Worker, tmp_path: Path
) -> None:
    record = tmp_path / "record"
    [job_id] = worker.queue("looping", {"record": str(record)})
    worker.start()
    wait_until(lambda: recorded(record), timeout=JOB_TIMEOUT_S)
    assert worker.status(job_id) == "running"
    worker.signal(signal.SIGTERM)
    assert worker.wait(EXIT_TIMEOUT_S) == 0
    assert worker.status(job_id) == "pending"
    log = worker.log()
    assert "SIGTERM: stopping" in log and "jobservice stopped (exit status 0)" in log


def test_a_second_signal_exits_at_once_with_128_plus_the_signal(
    worker: Worker, tmp_path: Path
) -> None:
    record = tmp_path / "record"
    # Its gate never opens: the shutdown would wait shutdown_timeout for its next step.
    [job_id] = worker.queue("gated", {"record": str(record), "gate": str(tmp_path / "gate")})
    worker.start()
    wait_until(lambda: recorded(record), timeout=JOB_TIMEOUT_S)
    worker.signal(signal.SIGINT)
    wait_until(lambda: "SIGINT: stopping" in worker.log(), timeout=EXIT_TIMEOUT_S)
    worker.signal(signal.SIGTERM)
    assert worker.wait(EXIT_TIMEOUT_S) == 128 + signal.SIGTERM
    assert "SIGTERM again: exiting now" in worker.log()
    assert worker.status(job_id) == "running"  # the next start makes it pending


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("worker_kinds:no_such_kind", "module 'worker_kinds' has no attribute 'no_such_kind'"),
        ("no_such_package.kinds:recorder", "module 'no_such_package.kinds' not found"),
        ("worker_kinds", "expected 'package.module:attribute'"),
        ("worker_kinds:LOOP_STEP_S", "expected a JobKind or an iterable of them, got a float"),
    ],
)
def test_a_bad_kind_modules_entry_exits_2_naming_the_setting_and_the_entry(
    tmp_path: Path, entry: str, problem: str
) -> None:
    node = Worker(tmp_path, kind_modules=json.dumps(["worker_kinds:recorder", entry]))
    node.upgrade()
    result = subprocess.run(
        [str(JOBSERVICE), "worker"],
        env=node.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"setting 'kind_modules': entry {entry!r}: {problem}" in result.stderr


def test_a_worker_refuses_a_database_behind_its_migrations_with_exit_2(tmp_path: Path) -> None:
    node = Worker(tmp_path)
    result = subprocess.run(
        [str(JOBSERVICE), "worker"],
        env=node.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "run `jobservice db upgrade`" in result.stderr


def test_serve_runs_the_kinds_of_kind_modules_too(tmp_path: Path) -> None:
    record = tmp_path / "record"
    node = Worker(tmp_path / "serve", "serve", kind_modules="worker_kinds:recorder")
    node.root.mkdir()
    node.upgrade()
    [job_id] = node.queue("recorder", {"record": str(record)})
    Served.start(node)  # waits for /healthz
    try:
        assert node.wait_status("recorder", job_id, "finished", "error")["status"] == "finished"
        assert node.process is not None
        assert recorded(record) == [(job_id, node.process.pid)]
    finally:
        node.stop()
