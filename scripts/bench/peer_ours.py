"""This product in the peer benchmarks: a ``bench`` kind and the two ways it runs.

The kind is what a user registers for a job with one step of work:
``pending → running → work → finished``; ``work`` sleeps ``params["sleep"]`` seconds
(0 for the no-op) and writes the job's journal line (:mod:`journal`). Every state
goes to the job's log file and the statuses to the database, as for any job.

- :class:`OursEmbedded` (throughput): a ``JobService`` in the benchmark's process,
  as an application embeds it; ``submit`` per job.
- :class:`OursProcess` (durability): the service in a child process (this file run as
  a script); the benchmark sends it one line per job on its standard input, the
  child submits each with ``JobService.submit``. Killing the child kills the
  service and its 8 workers at once.

The job logs go to ``WORK_DIR/logs``, or ``$BENCH_LOG_DIR/logs`` when that is set
(a tmpfs, to tell the disk's cost of a file per job from the engine's).

    python peer_ours.py DATABASE_URL WORK_DIR   # child: reads "N SLEEP" lines
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parents[1]
for extra in (ROOT, BENCH):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import journal  # noqa: E402
from loguru import logger  # noqa: E402
from workers import on_cpu  # noqa: E402

from actors import JobService  # noqa: E402
from model.db import Store  # noqa: E402
from model.jobs import KindJob  # noqa: E402
from model.kinds import JobKind  # noqa: E402
from model.settings import Settings  # noqa: E402
from model.sm import CONTINUE, SM, Job, StatusUpdater  # noqa: E402
from model.status import Status  # noqa: E402

__all__ = ["KIND", "OursEmbedded", "OursProcess", "bench_kind"]

KIND = "bench"


class _Work:
    """The job's body: sleep, then the journal line."""

    def __init__(self, job: KindJob) -> None:
        self.job = job

    def enter(self) -> str:
        params = self.job.params
        journal.run_job(int(params["n"]), float(params.get("sleep", 0.0)))
        return CONTINUE

    def exit(self) -> None:
        return None


def bench_kind(workers: int) -> JobKind:
    def transitions(sm: SM, job: Job) -> None:
        assert isinstance(job, KindJob)
        sm.add_transition(Status.RUNNING, "work", _Work(job))
        sm.add_transition("work", Status.FINISHED, StatusUpdater(job, Status.FINISHED))

    return JobKind(KIND, transitions, workers)


def settings_for(database_url: str, work: Path) -> Settings:
    logs = Path(os.environ.get("BENCH_LOG_DIR") or work) / "logs"
    return Settings(database_url=database_url, log_dir=logs, key_path=work / "key")


def sqlalchemy_url(conninfo: str) -> str:
    """``postgresql://…`` (libpq) as the service wants it: ``postgresql+psycopg://…``."""
    return conninfo.replace("postgresql://", "postgresql+psycopg://", 1)


class OursEmbedded:
    """The service in this process (throughput)."""

    can_kill = False

    def __init__(self, name: str, database_url: str, work: Path, workers: int) -> None:
        self.name = name
        self.service = JobService(settings_for(database_url, work), [bench_kind(workers)])
        #: Job id of each job number, and when each job id's end was in the database.
        self.ids: dict[int, int] = {}
        self.ended: dict[int, float] = {}

    def start_worker(self) -> None:
        logger.remove()
        self.service.start()
        self.service.add_job_listener(self._ended)

    def _ended(self, _kind: str, job_id: int, _status: str) -> None:
        # In the thread that wrote the job's end (its worker's when the job was handed
        # over, else its pool's), once the write has committed.
        self.ended[job_id] = time.time()

    def ended_at(self) -> dict[int, float]:
        """When each job number's end was in the database (``time.time()``)."""
        return {n: self.ended[job_id] for n, job_id in self.ids.items()}

    def submit(self, n: int, sleep_s: float) -> None:
        self.ids[n] = self.service.submit(KIND, {"n": n, "sleep": sleep_s})

    def flush(self) -> None:
        return None

    def done(self) -> int:
        counts = self.service.store.status_counts("job", KIND)
        return counts.get(Status.FINISHED, 0) - 1  # less the warm-up job

    def kill_worker(self) -> None:
        raise NotImplementedError("the embedded service runs in this process")

    def close(self) -> None:
        self.service.shutdown()


class OursProcess:
    """The service in a child process (durability); see the module docstring."""

    can_kill = True

    def __init__(self, name: str, database_url: str, work: Path, workers: int) -> None:
        self.name = name
        self.database_url = database_url
        self.work = work
        self.workers = workers
        self._child: subprocess.Popen[str] | None = None
        self._store: Store | None = None
        self._log: IO[str] | None = None

    def start_worker(self) -> None:
        self._log = (self.work / "ours-child.log").open("a")
        self._child = subprocess.Popen(
            on_cpu(
                [sys.executable, __file__, self.database_url, str(self.work), str(self.workers)],
                dict(os.environ),
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )
        self._expect("ready")

    def _expect(self, word: str) -> None:
        assert self._child is not None and self._child.stdout is not None
        line = self._child.stdout.readline().strip()
        if line != word:
            raise RuntimeError(f"the service process said {line!r}, not {word!r}")

    def submit(self, n: int, sleep_s: float) -> None:
        assert self._child is not None and self._child.stdin is not None
        self._child.stdin.write(f"{n} {sleep_s}\n")

    def flush(self) -> None:
        """Returns once the child has submitted every job sent so far."""
        assert self._child is not None and self._child.stdin is not None
        self._child.stdin.write("sync\n")
        self._child.stdin.flush()
        self._expect("synced")

    def done(self) -> int:
        if self._store is None:
            self._store = Store(self.database_url)
        return self._store.status_counts("job", KIND).get(Status.FINISHED, 0) - 1

    def kill_worker(self) -> None:
        if self._child is not None:
            os.killpg(self._child.pid, signal.SIGKILL)
            self._child.wait()
            self._child = None

    def close(self) -> None:
        if self._child is not None:
            assert self._child.stdin is not None
            self._child.stdin.close()  # the child shuts the service down and exits
            try:
                self._child.wait(60)
            except subprocess.TimeoutExpired:
                self.kill_worker()
        if self._store is not None:
            self._store.close()
        if self._log is not None:
            self._log.close()


def child_main(database_url: str, work: Path, workers: int) -> None:
    logger.remove()
    with JobService(settings_for(database_url, work), [bench_kind(workers)]) as service:
        print("ready", flush=True)
        for line in sys.stdin:
            if line.strip() == "sync":
                print("synced", flush=True)
                continue
            n, sleep_s = line.split()
            service.submit(KIND, {"n": int(n), "sleep": float(sleep_s)})


if __name__ == "__main__":
    child_main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
