"""Dramatiq in the peer benchmarks: Redis broker, ``Results`` middleware (Redis
backend), one worker process of 8 threads (``dramatiq peer_dramatiq -p 1 -t 8``).

Dramatiq's defaults otherwise: a message is acknowledged after the actor returns;
a dead worker's unacknowledged messages are requeued by another worker's maintenance
once its heartbeat is older than ``heartbeat_timeout`` (60 s). Configured by
``BENCH_REDIS_URL``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dramatiq
import journal
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend
from workers import WorkerProcesses

__all__ = ["DramatiqPeer", "broker", "noop"]

_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
broker = RedisBroker(url=_URL)
backend = RedisBackend(url=_URL)
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench_noop", queue_name="bench", store_results=True)
def noop(n: int, sleep_s: float) -> float:
    return journal.run_job(n, sleep_s)


class DramatiqPeer:
    can_kill = True

    def __init__(self, name: str, work: Path, workers: int, env: dict[str, str]) -> None:
        self.name = name
        command = [sys.executable, "-m", "dramatiq", "peer_dramatiq"]
        command += ["--processes", "1", "--threads", str(workers), "--path", "."]
        self.processes = WorkerProcesses(
            [command], env, Path(__file__).parent, work / "dramatiq.log"
        )
        self.messages: list[Message[float]] = []

    def start_worker(self) -> None:
        self.processes.start()

    def submit(self, n: int, sleep_s: float) -> None:
        message = noop.send(n, sleep_s)
        if n != journal.WARMUP:
            self.messages.append(message)

    def flush(self) -> None:
        return None

    def done(self) -> int:
        """Messages whose result the backend holds."""
        client = backend.client
        keys = [backend.build_message_key(m) for m in self.messages]
        done = 0
        for start in range(0, len(keys), 5000):
            pipe = client.pipeline(transaction=False)
            for key in keys[start : start + 5000]:
                pipe.exists(key)
            done += sum(1 for found in pipe.execute() if found)
        return done

    def kill_worker(self) -> None:
        self.processes.kill()

    def close(self) -> None:
        self.processes.stop()
        broker.close()
