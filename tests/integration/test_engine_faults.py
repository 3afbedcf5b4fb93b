"""The engine under faults: stops that win, claims that take what they ask, and status
writes that land once the database is back (real SQLite files, real PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from enginekinds import Gate, Tracker, gated_kind, tick_kind
from postgres import PostgresCluster, postgres_cluster
from waiting import wait_until

from actors import JobService
from actors.base import ask
from actors.messages import PoolStats, PoolStatus
from model.db import Store
from model.status import Status

MakeService = Callable[..., JobService]


def _log(service: JobService, kind: str, job_id: int) -> str:
    return Path(service.log_path(kind, job_id)).read_text()


# -- stops ------------------------------------------------------------------------------


def test_a_stop_requested_while_a_step_runs_wins_over_the_steps_retryable_failure(
    make_service: MakeService,
) -> None:
    gate = Gate()
    service = make_service([gated_kind("gated", gate, pool_size=1)])
    job_id = service.submit("gated", {"then": "retryable"})
    assert gate.wait_running(1)

    assert service.stop("gated", job_id) == Status.RUNNING
    gate.opened.set()

    assert service.wait("gated", job_id, 20) == Status.STOPPED
    assert gate.runs == {job_id: 1}
    assert service.job("gated", job_id)["attempts"] == 0
    log = _log(service, "gated", job_id)
    assert "ended by the stop request" in log
    assert "retry 1" not in log


def test_a_stop_ends_a_step_waiting_on_its_interrupt_within_a_second(
    make_service: MakeService,
) -> None:
    gate = Gate()
    service = make_service([gated_kind("waiting", gate, pool_size=1)])
    job_id = service.submit("waiting", {"interruptible": True})
    assert gate.wait_running(1)

    asked = time.monotonic()
    service.stop("waiting", job_id)
    assert service.wait("waiting", job_id, 20) == Status.STOPPED
    assert time.monotonic() - asked < 1.0
    assert gate.runs == {job_id: 1}


def test_a_stop_of_a_job_its_pool_claimed_but_its_worker_has_not_started_is_kept(
    make_service: MakeService,
) -> None:
    # One worker, two jobs: the second is claimed the moment the first lets go, and a
    # stop that reaches the pool before the worker reads Run still counts.
    gate = Gate()
    service = make_service([gated_kind("queued", gate, pool_size=1)])
    first = service.submit("queued", {})
    second = service.submit("queued", {"interruptible": True})
    assert gate.wait_running(1)
    gate.opened.set()
    assert service.wait("queued", first, 20) == Status.FINISHED
    wait_until(lambda: service.status("queued", second) == Status.RUNNING)
    service.stop("queued", second)
    assert service.wait("queued", second, 20) == Status.STOPPED


# -- claims -----------------------------------------------------------------------------


def _queue_jobs(store: Store, pending: int, finished: int) -> None:
    with store.engine.begin() as conn:
        for status, count in (("finished", finished), ("pending", pending)):
            for _ in range(count):
                conn.exec_driver_sql(
                    "INSERT INTO img_scan_job (repository, tag, digest, status, attempts, "
                    "creation_time, update_time) VALUES ('library/app', 'v1', '', "
                    f"'{status}', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        analyze = "ANALYZE TABLE" if conn.dialect.name == "mysql" else "ANALYZE"
        conn.exec_driver_sql(f"{analyze} img_scan_job")


def test_concurrent_claims_on_an_analyzed_table_never_take_more_than_they_ask_for(
    database_url: str,
) -> None:
    store = Store(database_url)
    store.create_all()
    _queue_jobs(store, pending=45, finished=300)
    sizes: list[int] = []
    claimed: list[int] = []
    lock = threading.Lock()

    def claimant() -> None:
        while True:
            rows = store.claim_many("img_scan_job", None, 3)
            with lock:
                sizes.append(len(rows))
                claimed.extend(int(r["id"]) for r in rows)
            if not rows:
                return

    threads = [threading.Thread(target=claimant) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    store.close()
    assert max(sizes) <= 3
    assert len(claimed) == len(set(claimed)) == 45


def test_a_pool_handed_more_jobs_than_it_asked_for_hands_them_back_and_runs_them_all(
    make_service: MakeService,
) -> None:
    tracker = Tracker()
    service = make_service([tick_kind("greedy", tracker, pool_size=2)])
    store = service.store
    honest = store.claim_many

    def over_claiming(table: str, kind: str | None = None, limit: int = 1) -> list[Any]:
        # The plan the issue saw: a claim of n that took many more.
        return honest(table, kind, limit + 5)

    store.claim_many = over_claiming  # type: ignore[method-assign]
    ids = service.submit_many("greedy", [{"ticks": 1}] * 20)
    for job_id in ids:
        assert service.wait("greedy", job_id, 30) == Status.FINISHED
    assert tracker.most_at_once <= 2
    assert sorted(tracker.finished) == ids
    assert service.healthy()


# -- the database goes away and comes back ----------------------------------------------


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    """A cluster of this test's own, which it stops and starts."""
    with postgres_cluster() as cluster:
        yield cluster


def test_ends_and_claims_refused_while_postgresql_is_down_land_once_it_is_back(
    make_service: MakeService, own_postgres: PostgresCluster
) -> None:
    gate = Gate()
    service = make_service(
        [gated_kind("gated", gate, pool_size=2)], database_url=own_postgres.new_database()
    )
    running = [service.submit("gated", {}) for _ in range(2)]
    queued = [service.submit("gated", {}) for _ in range(2)]
    assert gate.wait_running(2)

    own_postgres.stop("fast")
    gate.opened.set()
    for job_id in running:
        wait_until(
            lambda job_id=job_id: (
                "writing it again until it lands" in _log(service, "gated", job_id)
            ),
            timeout=20,
        )
    # The idle workers' claims fail too, and the pool says so.
    pool = service._pools["gated"]
    wait_until(lambda: ask(pool, PoolStats(), PoolStatus, 5).claim_failing, timeout=20)
    own_postgres.start()

    # No submit wakes the pool: the pool's own timer writes the ends and claims again.
    for job_id in running + queued:
        assert service.wait("gated", job_id, 30) == Status.FINISHED
    for job_id in running:
        assert "status finished recorded" in _log(service, "gated", job_id)
    assert service.store.status_counts("job", "gated") == {"finished": 4}


_HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


def test_jobs_ending_while_another_process_holds_the_sqlite_write_lock_end_once_it_lets_go(
    make_service: MakeService, tmp_path: Path
) -> None:
    gate = Gate()
    service = make_service([gated_kind("gated", gate, pool_size=2)])
    ids = [service.submit("gated", {}) for _ in range(2)]
    assert gate.wait_running(2)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(tmp_path / "jobservice.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        gate.opened.set()
        # For 10 s the ends wait for the lock, and the service answers reads throughout.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            started = time.monotonic()
            assert [service.status("gated", job_id) for job_id in ids] == [Status.RUNNING] * 2
            assert time.monotonic() - started < 1.0
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(10)
    for job_id in ids:
        assert service.wait("gated", job_id, 30) == Status.FINISHED


def _tiny_disk(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> Path:
    """Fills the file system of ``folder``; returns the file that fills it."""
    filler = folder / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    yield from _tiny_disk(tmp_path / "small", "2m")


def test_jobs_finish_while_the_log_folders_disk_is_full(
    make_service: MakeService, small_disk: Path
) -> None:
    tracker = Tracker()
    service = make_service([tick_kind("logged", tracker, pool_size=2)], log_dir=small_disk)
    filler = _fill(small_disk)
    ids = service.submit_many("logged", [{"ticks": 2}] * 10)
    for job_id in ids:
        assert service.wait("logged", job_id, 30) == Status.FINISHED

    filler.unlink()
    after = service.submit("logged", {"ticks": 1})
    assert service.wait("logged", after, 30) == Status.FINISHED
    assert "state finished" in _log(service, "logged", after)


def test_ends_refused_by_a_full_database_disk_land_once_there_is_room(
    make_service: MakeService, small_disk: Path
) -> None:
    gate = Gate()
    service = make_service(
        [gated_kind("gated", gate, pool_size=2)],
        database_url=f"sqlite:///{small_disk}/jobservice.db",
    )
    ids = [service.submit("gated", {}) for _ in range(2)]
    assert gate.wait_running(2)
    filler = _fill(small_disk)
    # Fill the WAL's room too: writes that grow the file fail with "disk is full".
    with pytest.raises(Exception, match="full"):
        service.submit_many("gated", [{"pad": "x" * 4096}] * 500)
    gate.opened.set()
    for job_id in ids:
        wait_until(
            lambda job_id=job_id: (
                "writing it again until it lands" in _log(service, "gated", job_id)
            ),
            timeout=20,
        )
    assert [service.status("gated", job_id) for job_id in ids] == [Status.RUNNING] * 2

    filler.unlink()
    for job_id in ids:
        assert service.wait("gated", job_id, 30) == Status.FINISHED
    assert service.store.status_counts("job", "gated") == {"finished": 2}
