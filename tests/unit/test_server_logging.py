from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from loguru import logger

from actors.serve import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    logger.remove()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_stderr_logs_name_the_job_and_mask_its_secrets(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO")
    logger.bind(job_id=7, job_type="replication", secrets=("s3cret-pw",)).info(
        "login with s3cret-pw"
    )
    logging.getLogger("uvicorn.access").info("GET %s", "/healthz")
    logger.debug("not shown at INFO")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("replication job 7: login with ***")
    assert "INFO     uvicorn.access: GET /healthz" in lines[1]


def test_json_lines_carry_the_jobs_identity_and_no_secret(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("DEBUG", json_lines=True)
    try:
        raise ValueError("token s3cret-pw refused")
    except ValueError:
        logger.bind(job_id=7, job_type="scan", secrets=("s3cret-pw",)).exception("failed")
    (line,) = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["level"] == "ERROR" and record["message"] == "failed"
    assert record["job_id"] == 7 and record["job_type"] == "scan"
    assert "ValueError: token *** refused" in record["exception"]
    assert "s3cret-pw" not in line and "secrets" not in record
