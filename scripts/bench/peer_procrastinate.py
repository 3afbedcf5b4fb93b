"""procrastinate in the peer benchmarks: PostgreSQL, one worker process with
``--concurrency 8``.

The task is a coroutine (``asyncio.sleep`` for the durability jobs): procrastinate
runs concurrent jobs on its event loop and warns against concurrency with blocking
sync tasks. procrastinate's defaults otherwise: no automatic retry of jobs left
``doing`` by a dead worker (``retry_stalled_jobs`` is a call the user schedules).
Configured by ``BENCH_PG_DSN``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import journal
import procrastinate
import psycopg
from workers import WorkerProcesses

__all__ = ["ProcrastinatePeer", "app", "noop"]

_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=_DSN))


@app.task(name="bench_noop", queue="bench")
async def noop(n: int, sleep_s: float) -> None:
    if sleep_s:
        while not journal.gate_open():
            await asyncio.sleep(journal.GATE_POLL_S)
        await asyncio.sleep(sleep_s)
    journal.record(n)


class ProcrastinatePeer:
    can_kill = True

    def __init__(self, name: str, work: Path, workers: int, env: dict[str, str]) -> None:
        self.name = name
        command = [sys.executable, "-m", "procrastinate", "--app", "peer_procrastinate.app"]
        command += ["worker", "--concurrency", str(workers), "--queues", "bench"]
        self.processes = WorkerProcesses(
            [command], env, Path(__file__).parent, work / "procrastinate.log"
        )
        app.open()
        app.schema_manager.apply_schema()
        self._conn = psycopg.connect(_DSN, autocommit=True)

    def start_worker(self) -> None:
        self.processes.start()

    def submit(self, n: int, sleep_s: float) -> None:
        noop.defer(n=n, sleep_s=sleep_s)

    def flush(self) -> None:
        return None

    def done(self) -> int:
        """Jobs in status ``succeeded`` (less the warm-up job)."""
        row = self._conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        ).fetchone()
        return max(int(row[0]) - 1, 0) if row else 0

    def kill_worker(self) -> None:
        self.processes.kill()

    def close(self) -> None:
        self.processes.stop()
        self._conn.close()
        app.close()
