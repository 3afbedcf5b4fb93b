"""RQ in the peer benchmarks: Redis, ``SimpleWorker``.

A ``SimpleWorker`` runs one job at a time in its own process (no fork per job), and
RQ has no threads option: the 8 workers are 8 ``rq worker -w rq.SimpleWorker``
processes. Killing "the worker" kills all 8. RQ's defaults otherwise (result TTL
500 s, job timeout 180 s).
"""

from __future__ import annotations

import sys
from pathlib import Path

import journal
from redis import Redis
from rq import Queue
from workers import WorkerProcesses

__all__ = ["RQPeer", "noop"]

QUEUE = "bench"


def noop(n: int, sleep_s: float) -> float:
    return journal.run_job(n, sleep_s)


class RQPeer:
    can_kill = True

    def __init__(
        self, name: str, work: Path, workers: int, env: dict[str, str], redis_url: str
    ) -> None:
        self.name = name
        command = [sys.executable, "-m", "rq.cli", "worker", "-w", "rq.SimpleWorker"]
        command += ["-u", redis_url, "-q", QUEUE]
        self.processes = WorkerProcesses(
            [[*command, "-n", f"bench-{i}"] for i in range(workers)],
            env,
            Path(__file__).parent,
            work / "rq.log",
        )
        self.redis = Redis.from_url(redis_url)
        self.queue = Queue(QUEUE, connection=self.redis)
        self.ids: list[str] = []
        self.restarts = 0

    def start_worker(self) -> None:
        if self.restarts:
            # Names must be new: the killed workers' keys stay until their TTL ends.
            for command in self.processes.commands:
                command[-1] = f"{command[-1].split('~')[0]}~{self.restarts}"
        self.restarts += 1
        self.processes.start()

    def submit(self, n: int, sleep_s: float) -> None:
        job = self.queue.enqueue(noop, n, sleep_s)
        if n != journal.WARMUP:
            self.ids.append(job.id)

    def flush(self) -> None:
        return None

    def done(self) -> int:
        """Jobs in the queue's finished registry (less the warm-up job)."""
        return max(self.queue.finished_job_registry.count - 1, 0)

    def kill_worker(self) -> None:
        self.processes.kill()

    def close(self) -> None:
        self.processes.stop()
        self.redis.close()
