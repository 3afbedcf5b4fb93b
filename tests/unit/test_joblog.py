from __future__ import annotations

from pathlib import Path

import pytest

from model.joblog import JobLogSink, job_log_path, job_logger


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
