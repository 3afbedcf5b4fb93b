#!/usr/bin/env python3
"""Engine benchmark: N no-op jobs of a registered kind through the whole engine
(submit, claim, state machine, per-job log, status writes) on SQLite.

Prints jobs/s, submit-to-finished latency (p50/p99), CPU time per job, peak RSS; the
RSS that 100,000 queued jobs add; and the threads and RSS of 10,000 jobs waiting to
retry. The database and the job logs live in a temporary folder under ``--dir``
(default: the system's temporary folder); its file system and what creating a file
costs there are printed, as every job creates its log file (see ``scratch.py``).

    .venv/bin/python scripts/bench/engine.py [--jobs 10000] [--workers 8] [--dir D] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import scratch
from loguru import logger

from actors import JobService
from model.errors import RetryableError
from model.jobs import KindJob
from model.kinds import JobKind
from model.settings import Settings
from model.sm import CONTINUE, SM, Job, StatusUpdater
from model.status import Status


class Counter:
    """Counts job ends (a job listener, called in a pool's thread); ``all`` is set at ``n``."""

    def __init__(self, n: int) -> None:
        self.expected = n
        self.n = 0
        self.all = threading.Event()

    def count(self, _kind: str, _job_id: int, _status: str) -> None:
        self.n += 1
        if self.n == self.expected:
            self.all.set()


class Gate:
    """Holds every job until the gate opens: keeps jobs queued while RSS is measured."""

    opened = threading.Event()

    def enter(self) -> str:
        Gate.opened.wait(600)
        return CONTINUE

    def exit(self) -> None:
        return None


class FailOnce:
    def __init__(self, job: KindJob) -> None:
        self.job = job

    def enter(self) -> str:
        raise RetryableError("registry unreachable")

    def exit(self) -> None:
        return None


def noop_kind(workers: int) -> JobKind:
    """No work at all: pending → running → finished, each state written to the job's
    log and the statuses to the database."""

    def transitions(sm: SM, job: Job) -> None:
        sm.add_transition(Status.RUNNING, Status.FINISHED, StatusUpdater(job, Status.FINISHED))

    return JobKind("noop", transitions, workers)


def gated_kind(workers: int) -> JobKind:
    def transitions(sm: SM, job: Job) -> None:
        sm.add_transition(Status.RUNNING, "work", Gate())
        sm.add_transition("work", Status.FINISHED, StatusUpdater(job, Status.FINISHED))

    return JobKind("gated", transitions, workers)


def failing_kind(workers: int) -> JobKind:
    def transitions(sm: SM, job: Job) -> None:
        assert isinstance(job, KindJob)
        sm.add_transition(Status.RUNNING, "work", FailOnce(job))

    return JobKind("failing", transitions, workers)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def settings_in(folder: Path, **values: Any) -> Settings:
    return Settings(
        database_url=f"sqlite:///{folder}/bench.db",
        log_dir=folder / "logs",
        key_path=folder / "key",
        **values,
    )


def throughput(jobs: int, workers: int, batch: bool = False) -> dict[str, Any]:
    """``jobs`` submitted one ``submit`` at a time (an insert transaction each), or with
    one ``submit_many`` when ``batch``; timed until a job listener has seen them all
    end (then every one is checked to be ``finished``)."""
    with (
        scratch.folder("bench-engine-") as tmp,
        JobService(settings_in(tmp), [noop_kind(workers)]) as svc,
    ):
        create_us = scratch.file_create_us(tmp)
        ended = Counter(jobs)
        svc.add_job_listener(ended.count)
        svc.stats()  # every actor has started once its pool answers
        cpu = os.times()
        started = time.perf_counter()
        if batch:
            ids = svc.submit_many("noop", ({} for _ in range(jobs)))
        else:
            ids = [svc.submit("noop", {}) for _ in range(jobs)]
        submitted = time.perf_counter()
        if not ended.all.wait(600):
            raise SystemExit(f"only {ended.n} of {jobs} jobs ended in 600 s")
        done = time.perf_counter()
        if svc.store.status_counts("job", "noop") != {Status.FINISHED: jobs}:
            raise SystemExit(f"not every job finished: {svc.store.status_counts('job', 'noop')}")
        cpu_s = sum(os.times()[:2]) - sum(cpu[:2])
        rows = [svc.store.job("job", i) for i in ids[:: max(1, jobs // 2000)]]
        latencies = sorted((r["update_time"] - r["creation_time"]).total_seconds() for r in rows)
    return {
        "jobs": jobs,
        "workers": workers,
        "submitted": "in one submit_many" if batch else "one submit each",
        "seconds": round(done - started, 3),
        "jobs_per_s": round(jobs / (done - started), 1),
        "submit_per_s": round(jobs / (submitted - started), 1),
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "latency_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
        "cpu_us_per_job": round(cpu_s / jobs * 1e6),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "folder": tempfile.gettempdir(),
        "file_system": scratch.file_system(Path(tempfile.gettempdir()).resolve()),
        "file_create_us": round(create_us, 1),
    }


def queued_memory(jobs: int) -> dict[str, Any]:
    with (
        scratch.folder("bench-engine-") as tmp,
        JobService(settings_in(tmp), [gated_kind(8)]) as svc,
    ):
        before = rss_mb()
        for start in range(0, jobs, 10_000):
            svc.submit_many("gated", ({"n": n} for n in range(start, min(start + 10_000, jobs))))
        stats = svc.stats()["gated"]
        after = rss_mb()
        Gate.opened.set()
        svc.stop("gated", 1)
    return {
        "queued": stats["queued"],
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "rss_added_mb": round(after - before, 1),
    }


def waiting_retries(jobs: int) -> dict[str, Any]:
    settings = dict(retry_delay=3600.0, retry_delay_max=3600.0)
    with (
        scratch.folder("bench-engine-") as tmp,
        JobService(settings_in(tmp, **settings), [failing_kind(8)]) as svc,
    ):
        svc.stats()  # every actor has started once its pool answers
        threads_before, rss_before = threading.active_count(), rss_mb()
        ids = svc.submit_many("failing", ({} for _ in range(jobs)))
        deadline = time.monotonic() + 600
        while svc.store.status_counts("job", "failing").get(Status.RETRYING, 0) < jobs:
            if time.monotonic() > deadline:
                raise SystemExit("jobs did not all reach retrying")
            time.sleep(0.1)
        stats = svc.stats()["failing"]
        threads_after, rss_after = threading.active_count(), rss_mb()
        del ids
    return {
        "retrying": stats["delayed"],
        "threads_before": threads_before,
        "threads_after": threads_after,
        "rss_before_mb": round(rss_before, 1),
        "rss_after_mb": round(rss_after, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--retrying", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, help="where the database and job logs go")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = str(args.dir)
    logger.remove()

    result: dict[str, Any] = {}
    for name, batch in (("throughput", False), ("throughput_batch", True)):
        t = result[name] = throughput(args.jobs, args.workers, batch)
        print(
            f"{name}: {t['jobs']} no-op jobs ({t['submitted']}), {t['workers']} workers, "
            f"SQLite: {t['jobs_per_s']} jobs/s (submit {t['submit_per_s']}/s), latency p50 "
            f"{t['latency_p50_ms']} ms p99 {t['latency_p99_ms']} ms, "
            f"CPU {t['cpu_us_per_job']} us/job, peak RSS {t['peak_rss_mb']} MB; database and "
            f"logs in {t['folder']} ({t['file_system']}, a new file {t['file_create_us']} us), "
            f"load average "
            f"{os.getloadavg()[0]:.1f}  [goal >= 2000 jobs/s]"
        )
    if args.queued:
        q = result["queued"] = queued_memory(args.queued)
        print(
            f"queued: {q['queued']} jobs waiting add {q['rss_added_mb']} MB RSS "
            f"({q['rss_before_mb']} -> {q['rss_after_mb']} MB)  [goal <= 100 MB]"
        )
    if args.retrying:
        r = result["retrying"] = waiting_retries(args.retrying)
        print(
            f"retrying: {r['retrying']} jobs waiting to retry; threads {r['threads_before']} -> "
            f"{r['threads_after']}, RSS {r['rss_before_mb']} -> {r['rss_after_mb']} MB"
            "  [goal: no thread per job]"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
