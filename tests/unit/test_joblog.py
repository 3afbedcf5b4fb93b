from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from loguru import logger

from model.joblog import JobLogSink, _appender, job_log_path, job_logger


@pytest.mark.parametrize(
    ("job_id", "expected"),
    [
        (123, "/base/job_123.log"),
        (999, "/base/job_999.log"),
        (1000, "/base/1/job_1000.log"),
        (1234567, "/base/1/234/job_1234567.log"),
        (1002003004, "/base/1/002/003/job_1002003004.log"),
        (10000, "/base/10/job_10000.log"),
    ],
)
def test_log_paths_nest_the_thousands_of_the_id_as_the_original(job_id: int, expected: str) -> None:
    assert job_log_path("/base", job_id) == expected


def test_a_negative_id_has_no_log_path() -> None:
    with pytest.raises(ValueError, match="negative"):
        job_log_path("/base", -1)


def test_secrets_bound_to_a_job_never_reach_its_log(tmp_path: Path) -> None:
    sink = JobLogSink()
    sink.install()
    try:
        path = str(tmp_path / "a" / "job_1.log")
        log = job_logger(sink, path, job_id=1).bind(secrets=("hunter2",))
        log.info("login with hunter2 failed")
        log.info("token={}", "hunter2")
    finally:
        sink.remove()
    text = Path(path).read_text()
    assert "hunter2" not in text
    assert text.count("***") == 2


def test_records_of_another_service_do_not_reach_this_sinks_files(tmp_path: Path) -> None:
    mine, theirs = JobLogSink(), JobLogSink()
    mine.install()
    try:
        job_logger(theirs, str(tmp_path / "job_2.log")).info("not mine")
        job_logger(mine, str(tmp_path / "job_3.log")).info("mine")
    finally:
        mine.remove()
    assert not (tmp_path / "job_2.log").exists()
    assert "mine" in (tmp_path / "job_3.log").read_text()


def test_lines_of_many_threads_reach_their_files_in_each_threads_order(tmp_path: Path) -> None:
    sink = JobLogSink()
    sink.install()
    try:

        def write(job: int) -> None:
            for n in range(200):
                sink.write_line(str(tmp_path / f"job_{job}.log"), "INFO", f"line {n}")

        threads = [threading.Thread(target=write, args=(job,)) for job in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sink.flush()
        for job in range(8):
            lines = (tmp_path / f"job_{job}.log").read_text().splitlines()
            assert [line.split("] ")[1] for line in lines] == [f"line {n}" for n in range(200)]
    finally:
        sink.remove()


def test_remove_writes_every_line_still_queued(tmp_path: Path) -> None:
    sink = JobLogSink()
    sink.install()
    paths = [str(tmp_path / str(n // 1000) / f"job_{n}.log") for n in range(3000)]
    for path in paths:
        sink.write_line(path, "INFO", "state running (from pending)")
    sink.remove()
    assert all(Path(path).read_text().endswith("state running (from pending)\n") for path in paths)


def test_a_line_written_without_a_running_writer_is_appended_at_once(tmp_path: Path) -> None:
    sink = JobLogSink()
    sink.install()
    sink.remove()
    path = tmp_path / "late" / "job_5.log"
    sink.write_line(str(path), "WARNING", "logged after shutdown")
    assert path.read_text().endswith("[WARNING] logged after shutdown\n")
    assert sink.flush()


def test_a_file_that_cannot_be_written_is_reported_and_the_others_still_are(
    tmp_path: Path,
) -> None:
    reported: list[str] = []
    handler = logger.add(reported.append, level="ERROR", format="{message}")
    (tmp_path / "job_1.log").mkdir()  # a folder where the log file should be
    sink = JobLogSink()
    sink.install()
    try:
        sink.write_line(str(tmp_path / "job_1.log"), "INFO", "lost")
        sink.write_line(str(tmp_path / "job_2.log"), "INFO", "kept")
        assert sink.flush()
        sink.write_line(str(tmp_path / "job_3.log"), "INFO", "kept too")
        assert sink.flush()
    finally:
        sink.remove()
        logger.remove(handler)
    assert "kept" in (tmp_path / "job_2.log").read_text()
    assert "kept too" in (tmp_path / "job_3.log").read_text()
    assert [line for line in reported if "job_1.log" in line and "Is a directory" in line]


def test_a_writer_far_behind_holds_up_the_thread_that_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_appender, "MAX_LINES_BEHIND", 10)
    sink = JobLogSink()
    sink.install()
    try:
        for n in range(100):
            sink.write_line(str(tmp_path / f"job_{n}.log"), "INFO", "state running")
            assert sink._appender.behind <= 10
    finally:
        sink.remove()
    assert len(list(tmp_path.glob("job_*.log"))) == 100


class _CountedEvent(threading.Event):
    """An event that counts the times it was set."""

    def __init__(self) -> None:
        super().__init__()
        self.sets = 0

    def set(self) -> None:
        self.sets += 1
        super().set()


def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_lines_that_keep_coming_never_wake_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_appender, "IDLE_AFTER_S", 60.0)
    appender = _appender.LogAppender()
    wake = appender._wake = _CountedEvent()
    appender.start()
    try:
        path = str(tmp_path / "job_1.log")
        for n in range(20):
            appender.append(path, f"line {n}\n".encode())
            assert appender.flush()
        assert wake.sets == 0
    finally:
        appender.stop()
    assert Path(path).read_text().splitlines() == [f"line {n}" for n in range(20)]


def test_a_writer_quiet_for_a_while_sleeps_and_the_next_line_wakes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_appender, "IDLE_AFTER_S", 0.05)
    appender = _appender.LogAppender()
    wake = appender._wake = _CountedEvent()
    appender.start()
    try:
        assert _until(lambda: appender._writer_idle)
        path = tmp_path / "job_2.log"
        appender.append(str(path), b"after a quiet spell\n")
        assert wake.sets == 1
        assert _until(lambda: path.exists() and path.read_text() == "after a quiet spell\n")
    finally:
        appender.stop()
