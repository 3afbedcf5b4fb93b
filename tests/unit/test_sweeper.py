from __future__ import annotations

import os
import time
from pathlib import Path

from waiting import wait_until

from actors.serve import LogSweeper
from model.joblog import job_log_path

DAY = 86_400.0
NOW = 1_900_000_000.0


def write_log(base: Path, job_id: int, age_days: float) -> Path:
    path = Path(job_log_path(base, job_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"job {job_id}\n")
    stamp = NOW - age_days * DAY
    os.utime(path, (stamp, stamp))
    return path


def sweeper(log_dir: Path, days: float = 14) -> LogSweeper:
    return LogSweeper(log_dir, days, clock=lambda: NOW)


def test_logs_older_than_the_retention_are_deleted_and_newer_ones_kept(tmp_path: Path) -> None:
    old = [write_log(tmp_path, i, 20) for i in (5, 1234, 1_234_567)]
    young = [write_log(tmp_path, i, 3) for i in (6, 1235, 2_000_001)]
    result = sweeper(tmp_path).sweep()
    assert result.files == 3 and result.bytes == sum(
        len(f"job {i}\n") for i in (5, 1234, 1_234_567)
    )
    assert not any(p.exists() for p in old)
    assert all(p.exists() for p in young)


def test_emptied_thousands_folders_go_but_the_newest_jobs_folders_stay(tmp_path: Path) -> None:
    write_log(tmp_path, 1_234_567, 30)
    write_log(tmp_path, 1_235_001, 30)
    newest = write_log(tmp_path, 2_001_002, 30)
    result = sweeper(tmp_path).sweep()
    assert result.files == 3
    assert not (tmp_path / "1").exists()
    # New jobs (their ids only grow) write where the newest did: the log sink keeps
    # that folder in mind, so it stays.
    assert newest.parent.is_dir() and newest.parent == tmp_path / "2" / "001"
    write_log(tmp_path, 3_000_000, 1)
    # Once a newer job has a log, the old folders may go: 2/001, then 2.
    assert sweeper(tmp_path).sweep().folders == 2
    assert not (tmp_path / "2").exists()


def test_kind_folders_and_files_that_are_not_job_logs_are_left_alone(tmp_path: Path) -> None:
    scans = tmp_path / "scan_job"
    old_scan = write_log(scans, 7, 40)
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    stamp = NOW - 40 * DAY
    os.utime(other, (stamp, stamp))
    result = sweeper(tmp_path).sweep()
    assert result.files == 1 and not old_scan.exists()
    assert scans.is_dir() and other.exists()


def test_zero_retention_keeps_every_log(tmp_path: Path) -> None:
    old = write_log(tmp_path, 5, 400)
    assert sweeper(tmp_path, days=0).sweep().files == 0
    assert old.exists()


def test_the_thread_sweeps_at_start_and_stops_when_asked(tmp_path: Path) -> None:
    path = Path(job_log_path(tmp_path, 9))
    path.write_text("old\n")
    stamp = time.time() - 30 * DAY
    os.utime(path, (stamp, stamp))
    running = LogSweeper(tmp_path, 14, interval_s=3600).start()
    try:
        wait_until(lambda: not path.exists(), timeout=10)
    finally:
        running.stop()
    assert running._thread is None
