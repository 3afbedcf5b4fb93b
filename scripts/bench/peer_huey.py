"""Huey in the peer benchmarks: Redis storage, results stored, one consumer process
of 8 worker threads (``huey_consumer peer_huey.huey -k thread -w 8``).

Huey's defaults otherwise: the Redis storage blocks on ``BRPOP`` (``blocking=True``,
so an idle worker wakes as a task arrives, with no polling delay), a task is popped
from the queue before it runs (at most once: a task in a killed consumer's hands is
gone), a task's return value is stored in a Redis hash until read. Configured by
``BENCH_REDIS_URL``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import journal
from huey import RedisHuey
from workers import WorkerProcesses

__all__ = ["HueyPeer", "huey", "noop"]

_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
huey = RedisHuey("bench", url=_URL, results=True)


@huey.task(name="bench_noop")
def noop(n: int, sleep_s: float) -> float:
    return journal.run_job(n, sleep_s)


class HueyPeer:
    can_kill = True

    def __init__(self, name: str, work: Path, workers: int, env: dict[str, str]) -> None:
        self.name = name
        command = [sys.executable, "-m", "huey.bin.huey_consumer", "peer_huey.huey"]
        command += ["--worker-type", "thread", "--workers", str(workers)]
        self.processes = WorkerProcesses([command], env, Path(__file__).parent, work / "huey.log")

    def start_worker(self) -> None:
        self.processes.start()

    def submit(self, n: int, sleep_s: float) -> None:
        noop(n, sleep_s)

    def flush(self) -> None:
        return None

    def done(self) -> int:
        """Results in Huey's result store (less the warm-up job's; none is read)."""
        return max(huey.storage.result_store_size() - 1, 0)

    def kill_worker(self) -> None:
        self.processes.kill()

    def close(self) -> None:
        self.processes.stop()
        huey.storage.pool.disconnect()
