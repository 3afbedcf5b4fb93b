"""Celery in the peer benchmarks: Redis broker, Redis result backend, threads pool.

The worker runs ``celery -A peer_celery worker --pool threads --concurrency 8`` with
Celery's defaults otherwise (prefetch multiplier 4, a task is acknowledged before it
runs, ``visibility_timeout`` 1 h). Configured by ``BENCH_REDIS_URL`` (worker
processes started by Celery's command line have no other way to be told).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import journal
from celery import Celery
from workers import WorkerProcesses

__all__ = ["CeleryPeer", "app", "noop"]

_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("bench", broker=_URL, backend=_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop(n: int, sleep_s: float) -> float:
    return journal.run_job(n, sleep_s)


class CeleryPeer:
    can_kill = True

    def __init__(self, name: str, work: Path, workers: int, env: dict[str, str]) -> None:
        self.name = name
        command = [sys.executable, "-m", "celery", "-A", "peer_celery", "worker"]
        command += ["--pool", "threads", "--concurrency", str(workers), "--loglevel", "WARNING"]
        self.processes = WorkerProcesses([command], env, Path(__file__).parent, work / "celery.log")
        self.ids: list[str] = []
        self._client = app.backend.client

    def start_worker(self) -> None:
        self.processes.start()

    def submit(self, n: int, sleep_s: float) -> None:
        result = noop.delay(n, sleep_s)
        if n != journal.WARMUP:
            self.ids.append(result.id)

    def flush(self) -> None:
        return None

    def done(self) -> int:
        """Tasks whose stored result says SUCCESS."""
        keys = [app.backend.get_key_for_task(i) for i in self.ids]
        done = 0
        for start in range(0, len(keys), 5000):
            for raw in self._client.mget(keys[start : start + 5000]):
                if raw is not None and b'"SUCCESS"' in raw:
                    done += 1
        return done

    def kill_worker(self) -> None:
        self.processes.kill()

    def close(self) -> None:
        self.processes.stop()
        app.close()
