#!/usr/bin/env python3
"""A job handed straight to an idle worker against one queued and claimed, in one run.

One ``JobService`` (SQLite, the ``bench`` kind of :mod:`peer_ours`, 8 workers, logs
in the run's folder) takes no-op jobs at a steady rate, one submit every ``1/rate``
seconds on an absolute schedule; every other submit is refused the pool's free slot,
so that its job is queued ``pending`` and claimed as before (see ``actors/handoff.py``).
Both kinds of job thus share the process, the disk and the machine's load. Latency:
from just before the submit to the job's end in the database (the job listener, called
after the end write: the worker's for a job handed over, the pool's for one claimed).
Prints p50, p90, p99 and max of each.

    .venv/bin/python scripts/bench/handoff.py [--jobs 1000] [--rate 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parents[1]
for extra in (ROOT, BENCH):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import journal  # noqa: E402
import peer_ours  # noqa: E402
import scratch  # noqa: E402
from loguru import logger  # noqa: E402

from actors import JobService  # noqa: E402

__all__ = ["main", "one_round"]

WARM_UP = 20
WAIT_S = 60.0


def one_round(folder: Path, jobs: int, rate: float) -> dict[str, list[float]]:
    """Latencies (ms) of the jobs handed over and of those queued, in one service."""
    os.environ[journal.ENV] = str(folder)
    settings = peer_ours.settings_for(f"sqlite:///{folder}/bench.db", folder)
    service = JobService(settings, [peer_ours.bench_kind(8)]).start()
    ended: dict[int, float] = {}
    all_ended = threading.Event()
    total = WARM_UP + jobs

    def heard(_kind: str, job_id: int, _status: str) -> None:
        ended[job_id] = time.perf_counter()
        if len(ended) >= total:
            all_ended.set()

    service.add_job_listener(heard)
    slots = service._slots[peer_ours.KIND]
    take = slots.take
    started: dict[int, tuple[bool, float]] = {}
    due = time.perf_counter()
    try:
        for n in range(total):
            handed = n % 2 == 0
            slots.take = take if handed else (lambda: None)  # type: ignore[method-assign]
            due += 1 / rate
            while (left := due - time.perf_counter()) > 0:
                time.sleep(min(left, 0.0005))
            at = time.perf_counter()
            job_id = service.submit(peer_ours.KIND, {"n": n, "sleep": 0})
            if n >= WARM_UP:
                started[job_id] = (handed, at)
        if not all_ended.wait(WAIT_S):
            raise SystemExit(f"{total - len(ended)} job(s) did not end in {WAIT_S:.0f} s")
    finally:
        service.shutdown()
    found: dict[str, list[float]] = {"handed": [], "queued": []}
    for job_id, (handed, at) in started.items():
        found["handed" if handed else "queued"].append((ended[job_id] - at) * 1000)
    return found


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logger.remove()
    for round_no in range(1, args.rounds + 1):
        with scratch.folder("bench-handoff-") as folder:
            found = one_round(folder, args.jobs, args.rate)
        for name, values in found.items():
            print(
                f"round {round_no} {name}: {len(values)} jobs, ms p50 "
                f"{_quantile(values, 0.5):.2f} p90 {_quantile(values, 0.9):.2f} "
                f"p99 {_quantile(values, 0.99):.2f} max {max(values):.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
