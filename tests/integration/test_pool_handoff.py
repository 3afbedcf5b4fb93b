"""One rule for a job's end: its worker hands the last status to its pool, and the pool
writes it, also when the job ends after the pool stopped taking messages (the service
shutting down): the worker then leaves it for the pool, which writes it once its
workers have ended, and the service's listeners hear of it."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from enginekinds import Gate, gated_kind
from waiting import wait_until

from actors import JobService
from model.settings import Settings
from model.status import Status


def test_a_job_that_ends_after_its_pool_stopped_is_written_by_the_pool_and_heard(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    gate = Gate()
    service = JobService(
        make_settings(retry_delay=60, retry_delay_max=60), [gated_kind("gated", gate, 1)]
    ).start()
    heard: list[tuple[int, str]] = []
    service.add_job_listener(lambda _kind, job_id, status: heard.append((job_id, status)))
    job_id = service.submit("gated", {"then": "retryable"})
    assert gate.wait_running(1)
    pool = service._pools["gated"]

    # The step outlasts shutdown's hand-back (1 s) and ends only once the pool has
    # stopped: its retry is told to a pool that takes no more messages.
    shutdown = threading.Thread(target=service.shutdown, args=(1,))
    shutdown.start()
    wait_until(pool.actor_stopped.is_set, timeout=15)
    gate.opened.set()
    shutdown.join(20)
    assert not shutdown.is_alive()

    with contextlib.closing(sqlite3.connect(tmp_path / "jobservice.db")) as db:
        row = db.execute("SELECT status, attempts FROM job WHERE id = ?", (job_id,)).fetchone()
    assert row == (Status.RETRYING, 1)
    assert (job_id, Status.RETRYING) in heard
