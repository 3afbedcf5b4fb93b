from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from waiting import wait_until

from model.db import Store
from model.status import Status

HERE = Path(__file__).parent


def start_engine(tmp_path: Path, url: str, gate: Path) -> subprocess.Popen[str]:
    paths = [str(HERE.parent), str(HERE), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    process = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "engine_process.py"),
            url,
            str(tmp_path / "logs"),
            str(tmp_path / "key"),
            str(gate),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def test_jobs_of_a_process_killed_mid_job_finish_after_restart(
    tmp_path: Path, database_url: str
) -> None:
    url = database_url
    gate = tmp_path / "gate"
    store = Store(url)
    store.create_all()
    ids = store.insert_jobs("job", [{"kind": "gated", "params": {"ticks": 2}} for _ in range(3)])

    logs = [tmp_path / "logs" / "gated" / f"job_{job_id}.log" for job_id in ids]

    def ticking() -> int:
        return sum(1 for log in logs if log.exists() and "tick 1" in log.read_text())

    first = start_engine(tmp_path, url, gate)
    wait_until(lambda: ticking() == 2)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert store.status_counts("job") == {Status.RUNNING: 2, Status.PENDING: 1}

    gate.touch()
    second = start_engine(tmp_path, url, gate)
    try:
        wait_until(lambda: store.status_counts("job") == {Status.FINISHED: 3}, timeout=30)
    finally:
        assert second.stdin is not None
        second.stdin.close()
        second.wait(20)
    assert second.returncode == 0
    texts = [log.read_text() for log in logs]
    assert all("state finished" in text for text in texts)
    assert sorted(text.count("state running") for text in texts) == [1, 2, 2]
    store.close()
