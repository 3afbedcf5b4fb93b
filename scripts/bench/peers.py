#!/usr/bin/env python3
"""This product against the job queues a user would pick instead: one run of one
system, throughput or durability. ``scripts/bench/suite.py`` runs them all, in
alternation, and writes the report.

Systems (8 workers each):

- ``ours-sqlite``, ``ours-postgres``: ``JobService`` with a ``bench`` kind
  (``pending → running → work → finished``, each state in the job's log file, the
  statuses in the database), pool of 8;
- ``celery``: Redis broker and result backend, ``--pool threads --concurrency 8``;
- ``rq``: Redis, 8 ``SimpleWorker`` processes (RQ has no threads; a SimpleWorker runs
  one job at a time);
- ``dramatiq``: Redis broker, ``Results`` middleware (Redis), 1 process of 8 threads;
- ``procrastinate``: PostgreSQL, 1 worker process, ``--concurrency 8``;
- ``huey``: Redis storage (blocking pop), results stored, 1 consumer process of 8
  worker threads.

Every job's body is the same: sleep (0 s for the no-op), then one line appended to a
journal file of its process (see :mod:`journal`): its number and ``time.time()``.
Every run starts a fresh Redis (and a new PostgreSQL database), starts the workers
and runs one warm-up job before any clock starts.

``--cpu N`` pins the processes that run the jobs to CPU ``N`` (``taskset``): a peer's
worker processes (its submitter in this process, Redis and PostgreSQL stay on every
CPU); for ours this process, which submits and runs the jobs. The threads of one
Python process take turns under one GIL, and a thread woken on another core finds its
caches cold: on two cores both ours and a threaded peer run faster pinned.

throughput
    Submits N no-op jobs one call each (``submit``, ``delay``, ``enqueue``,
    ``send``, ``defer``) from this process, then waits until the journal holds all N
    and then until the system itself reports all N done (finished status, SUCCESS
    result, finished registry, stored result, ``succeeded``). jobs/s = N / (first
    submit → that report). Latency of a job = its journal time - the time just before
    its submit call. The peers' workers run in their own processes (their command
    lines); ours runs in this process, submitting and working in one interpreter.
paced
    Submits N no-op jobs (default 1,000) at a steady rate (``--rate``, default 100/s:
    job n's submit is due at start + n / rate, slept to on an absolute schedule, so a
    late submit does not shift the next ones), then waits until all are done.
    Latency of a job = from just before its submit call to the end of its body (the
    journal line), for every system; for ours also to the job's end in the database
    (the service's job listener, called once the job's end write has committed),
    the number the goal is judged on. p50 / p99 / max of each, how late the submits
    were, and the slowest jobs' submit times (seconds from the first submit), to set
    against ``--trace`` (ours: a file of the engine's events, see :mod:`enginetrace`).
durability
    Submits N jobs of ``--sleep`` seconds each (they wait for a gate, a file, so that
    all N are queued before any runs), opens the gate, waits until ``--kill-after`` have run,
    SIGKILLs the worker process (all its process group; all 8 for RQ; for ours the
    process running the service, which gets its jobs through a pipe), starts it again
    and waits until every job is done or no job has completed for ``--idle`` seconds.
    Counts, from the journal and the system's own status: finished (the system says
    done), lost (the body never completed), run twice (the body completed twice or
    more).

    .venv/bin/python scripts/bench/peers.py throughput --system celery --jobs 10000
    .venv/bin/python scripts/bench/peers.py durability --system rq --jobs 1000
    .venv/bin/python scripts/bench/peers.py paced --system huey --jobs 1000 --rate 100
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parents[1]
for extra in (ROOT, BENCH):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import journal  # noqa: E402
import psutil  # noqa: E402
import scratch  # noqa: E402
import workers  # noqa: E402
from servers import new_database, postgres_cluster, redis_server  # noqa: E402

__all__ = ["SYSTEMS", "durability", "main", "paced", "throughput"]

SYSTEMS = (
    "ours-sqlite",
    "ours-postgres",
    "celery",
    "rq",
    "dramatiq",
    "procrastinate",
    "huey",
)
_REDIS = {"celery", "rq", "dramatiq", "huey"}
_POSTGRES = {"ours-postgres", "procrastinate"}
#: Seconds the warm-up job may take (worker start included).
WARMUP_TIMEOUT_S = 120.0
#: Seconds a throughput run may take before it is given up.
RUN_TIMEOUT_S = 600.0
#: Seconds between two looks at the journal, and at the system's own status.
POLL_JOURNAL_S = 0.005
POLL_STATUS_S = 0.01


class System(Protocol):
    """One system under test, as the drivers below use it."""

    name: str
    can_kill: bool

    def start_worker(self) -> None: ...
    def submit(self, n: int, sleep_s: float) -> None: ...
    def flush(self) -> None: ...
    def done(self) -> int: ...
    def kill_worker(self) -> None: ...
    def close(self) -> None: ...


# -- measuring ----------------------------------------------------------------------


class CpuMeter:
    """CPU seconds (user + system) of a set of processes and their children: this
    one, the workers, and the broker or database server."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self._seen: dict[int, float] = {}
        self._start = 0.0

    def _now(self) -> float:
        for pid in self.pids():
            try:
                root = psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    cpu = proc.cpu_times()
                    self._seen[proc.pid] = cpu.user + cpu.system
            except psutil.Error:
                continue
        return sum(self._seen.values())

    def start(self) -> None:
        self._start = self._now()

    def seconds(self) -> float:
        return round(self._now() - self._start, 2)


def _wait(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout_s} s")
        time.sleep(poll_s)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def warm_up(system: System, folder: Path) -> float:
    """Starts the workers and runs one job; returns the seconds that took."""
    started = time.monotonic()
    system.start_worker()
    system.submit(journal.WARMUP, 0.0)
    system.flush()
    _wait(lambda: journal.count(folder) >= 1, WARMUP_TIMEOUT_S, "warm-up job", POLL_JOURNAL_S)
    return round(time.monotonic() - started, 2)


def throughput(system: System, folder: Path, jobs: int, cpu: CpuMeter) -> dict[str, Any]:
    """See the module docstring."""
    submitted_at = [0.0] * jobs
    cpu.start()
    started = time.time()
    for n in range(jobs):
        submitted_at[n] = time.time()
        system.submit(n, 0.0)
    system.flush()
    submitted = time.time()
    _wait(lambda: journal.count(folder) >= jobs + 1, RUN_TIMEOUT_S, "jobs", POLL_JOURNAL_S)
    _wait(lambda: system.done() >= jobs, RUN_TIMEOUT_S, "done status", POLL_STATUS_S)
    ended = time.time()
    cpu_s = cpu.seconds()
    done = journal.read(folder)
    missing = [n for n in range(jobs) if n not in done]
    if missing:
        raise RuntimeError(f"{len(missing)} jobs reported done never ran, e.g. {missing[:5]}")
    latencies = [done[n][0] - submitted_at[n] for n in range(jobs)]
    last_body = max(times[0] for times in done.values())
    return {
        "jobs": jobs,
        "seconds": round(ended - started, 3),
        "jobs_per_s": round(jobs / (ended - started), 1),
        "submit_per_s": round(jobs / (submitted - started), 1),
        "latency_p50_ms": round(_percentile(latencies, 0.50) * 1000, 1),
        "latency_p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
        "latency_mean_ms": round(statistics.fmean(latencies) * 1000, 1),
        "status_lag_ms": round((ended - last_body) * 1000, 1),
        "cpu_s": cpu_s,
        "run_twice": sum(1 for times in done.values() if len(times) > 1),
    }


def _spread(prefix: str, seconds: list[float]) -> dict[str, float]:
    return {
        f"{prefix}_p50_ms": round(_percentile(seconds, 0.50) * 1000, 2),
        f"{prefix}_p99_ms": round(_percentile(seconds, 0.99) * 1000, 2),
        f"{prefix}_max_ms": round(max(seconds) * 1000, 2),
        f"{prefix}_mean_ms": round(statistics.fmean(seconds) * 1000, 2),
    }


def paced(system: System, folder: Path, jobs: int, rate: float) -> dict[str, Any]:
    """See the module docstring."""
    period_s = 1.0 / rate
    submitted_at = [0.0] * jobs
    late = [0.0] * jobs
    first = time.perf_counter() + 0.05
    wall_first = time.time() + 0.05
    for n in range(jobs):
        due = first + n * period_s
        left = due - time.perf_counter()
        if left > 0:
            time.sleep(left)
        late[n] = time.perf_counter() - due
        submitted_at[n] = time.time()
        system.submit(n, 0.0)
    system.flush()
    _wait(lambda: journal.count(folder) >= jobs + 1, RUN_TIMEOUT_S, "jobs", POLL_JOURNAL_S)
    _wait(lambda: system.done() >= jobs, RUN_TIMEOUT_S, "done status", POLL_STATUS_S)
    done = journal.read(folder)
    missing = [n for n in range(jobs) if n not in done]
    if missing:
        raise RuntimeError(f"{len(missing)} jobs reported done never ran, e.g. {missing[:5]}")
    body = [done[n][0] - submitted_at[n] for n in range(jobs)]
    result: dict[str, Any] = {"jobs": jobs, "rate_per_s": rate, **_spread("body", body)}
    result["submit_late_p99_ms"] = round(_percentile(late, 0.99) * 1000, 2)
    result["submit_late_max_ms"] = round(max(late) * 1000, 2)
    judged = body
    ended = getattr(system, "ended_at", None)
    if callable(ended):
        at = ended()
        judged = [at[n] - submitted_at[n] for n in range(jobs)]
        result.update(_spread("db", judged))
    # The number judged: ours to the end in the database, a peer's to its body's end.
    result.update(_spread("latency", judged))
    slowest = sorted(range(jobs), key=lambda n: judged[n], reverse=True)[:15]
    result["slowest"] = [
        {
            "n": n,
            "submit_s": round(submitted_at[n] - wall_first, 4),
            "latency_ms": round(judged[n] * 1000, 2),
            "body_ms": round(body[n] * 1000, 2),
        }
        for n in slowest
    ]
    result["wall_first"] = wall_first
    return result


def durability(
    system: System,
    folder: Path,
    jobs: int,
    sleep_s: float,
    kill_after: int,
    idle_s: float,
    grace_s: float,
) -> dict[str, Any]:
    """See the module docstring. ``grace_s``: the time the first start took to run the
    warm-up job, allowed again to the restarted worker before the idle clock runs."""
    for n in range(jobs):
        system.submit(n, sleep_s)
    system.flush()
    journal.open_gate(folder)
    _wait(
        lambda: journal.count(folder) >= kill_after + 1,
        RUN_TIMEOUT_S,
        f"{kill_after} jobs before the kill",
        POLL_JOURNAL_S,
    )
    ran_before = journal.count(folder) - 1
    system.kill_worker()
    killed = time.monotonic()
    system.start_worker()
    restarted = time.monotonic()
    last_count, last_change = journal.count(folder), restarted + grace_s
    all_done_s: float | None = None
    while True:
        if system.done() >= jobs:
            all_done_s = round(time.monotonic() - killed, 2)
            break
        current = journal.count(folder)
        if current != last_count:
            last_count, last_change = current, max(time.monotonic(), last_change)
        if time.monotonic() - last_change > idle_s:
            break
        time.sleep(0.05)
    finished = system.done()
    executions = journal.read(folder)
    runs = [len(executions.get(n, [])) for n in range(jobs)]
    return {
        "jobs": jobs,
        "job_sleep_s": sleep_s,
        "in_flight_at_kill": jobs - ran_before,
        "finished": finished,
        "not_finished": jobs - finished,
        "lost": sum(1 for r in runs if r == 0),
        "run_twice": sum(1 for r in runs if r >= 2),
        "all_done_after_kill_s": all_done_s,
        "restart_s": round(restarted - killed, 2),
        "idle_s": idle_s,
    }


# -- one run ------------------------------------------------------------------------


def _make(
    name: str, mode: str, work: Path, workers: int, env: dict[str, str], urls: dict[str, str]
) -> System:
    if name.startswith("ours-"):
        from peer_ours import OursEmbedded, OursProcess, sqlalchemy_url

        url = (
            f"sqlite:///{work}/bench.db"
            if name == "ours-sqlite"
            else sqlalchemy_url(urls["postgres"])
        )
        cls = OursProcess if mode == "durability" else OursEmbedded
        return cls(name, url, work, workers)
    if name == "celery":
        from peer_celery import CeleryPeer

        return CeleryPeer(name, work, workers, env)
    if name == "rq":
        from peer_rq import RQPeer

        return RQPeer(name, work, workers, env, urls["redis"])
    if name == "dramatiq":
        from peer_dramatiq import DramatiqPeer

        return DramatiqPeer(name, work, workers, env)
    if name == "procrastinate":
        from peer_procrastinate import ProcrastinatePeer

        return ProcrastinatePeer(name, work, workers, env)
    if name == "huey":
        from peer_huey import HueyPeer

        return HueyPeer(name, work, workers, env)
    raise SystemExit(f"unknown system {name!r}; one of {', '.join(SYSTEMS)}")


def _postmaster(folder: Path) -> int | None:
    pid_file = folder / "data" / "postmaster.pid"
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _servers(
    stack: ExitStack, args: argparse.Namespace, work: Path
) -> tuple[dict[str, str], list[int]]:
    """The servers the system needs (Redis, PostgreSQL), started on ``stack``: their
    URLs by name, and their process ids (for the CPU meter)."""
    urls: dict[str, str] = {}
    server_pids: list[int] = []
    if args.system in _REDIS:
        redis = stack.enter_context(redis_server(work / "redis"))
        urls["redis"] = redis.url
        server_pids.append(redis._process.pid)
    if args.system in _POSTGRES:
        pg_port, pg_dir = args.pg_port, args.pg_dir
        if pg_port is None:
            cluster = stack.enter_context(postgres_cluster())
            pg_port, pg_dir = cluster.port, cluster.folder
        urls["postgres"] = new_database(pg_port)
        pid = _postmaster(Path(pg_dir)) if pg_dir else None
        if pid is not None:
            server_pids.append(pid)
    return urls, server_pids


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work).resolve() / f"{args.mode}-{args.system}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    folder = work / "journal"
    folder.mkdir()
    with ExitStack() as stack:
        urls, server_pids = _servers(stack, args, work)
        env = dict(os.environ)
        env[journal.ENV] = str(folder)
        env["BENCH_REDIS_URL"] = urls.get("redis", "")
        env["BENCH_PG_DSN"] = urls.get("postgres", "")
        env["PYTHONPATH"] = os.pathsep.join([str(BENCH), str(ROOT), env.get("PYTHONPATH", "")])
        if args.cpu is not None:
            env[workers.CPU_ENV] = str(args.cpu)
            if args.system.startswith("ours-") and args.mode != "durability":
                workers.pin_this_process(args.cpu)  # the service runs in this process
        os.environ.update(env)  # the peers' modules read their URLs when imported
        system = _make(args.system, args.mode, work, args.workers, env, urls)
        stack.callback(system.close)
        warm_s = warm_up(system, folder)
        create_us = scratch.file_create_us(work / "probe")
        tracer = None
        if args.trace and args.system.startswith("ours-"):
            import enginetrace

            tracer = enginetrace.Tracer(system.service)  # type: ignore[attr-defined]
            tracer.start()

        def pids() -> list[int]:
            found = [os.getpid(), *server_pids]
            for attr in ("processes", "_child"):
                holder = getattr(system, attr, None)
                if holder is None:
                    continue
                procs = getattr(holder, "processes", [holder])
                found += [p.pid for p in procs]
            return found

        if args.mode == "throughput":
            result = throughput(system, folder, args.jobs, CpuMeter(pids))
        elif args.mode == "paced":
            cpu = CpuMeter(pids)
            cpu.start()
            result = paced(system, folder, args.jobs, args.rate)
            result["cpu_s"] = cpu.seconds()
            if tracer is not None:
                args.trace.write_text(json.dumps(tracer.stop(result), indent=1))
        else:
            result = durability(
                system, folder, args.jobs, args.sleep, args.kill_after, args.idle, warm_s
            )
    result.update(system=args.system, mode=args.mode, workers=args.workers, warm_up_s=warm_s)
    result["file_create_us"] = create_us
    result["cpu"] = args.cpu
    if not args.keep:
        scratch.remove(work)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=("throughput", "durability", "paced"))
    parser.add_argument("--system", required=True, choices=SYSTEMS)
    parser.add_argument("--jobs", type=int, help="default 10,000 (throughput), 1,000")
    parser.add_argument("--rate", type=float, default=100.0, help="paced: submits per second")
    parser.add_argument("--trace", type=Path, help="paced, ours: write the engine's events")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--cpu",
        type=int,
        help="pin the processes that run the jobs to this CPU (ours: this process)",
    )
    parser.add_argument("--sleep", type=float, default=0.05, help="durability job, seconds")
    parser.add_argument("--kill-after", type=int, default=50, help="durability: jobs run first")
    parser.add_argument("--idle", type=float, default=15.0, help="durability: give up after")
    parser.add_argument("--pg-port", type=int, help="a running cluster (default: start one)")
    parser.add_argument("--pg-dir", help="that cluster's folder (for its CPU time)")
    parser.add_argument("--work", default=str(ROOT / "bench-results" / "work"))
    parser.add_argument("--keep", action="store_true", help="keep the run's folder")
    parser.add_argument("--json", type=Path, help="also write the result to this file")
    args = parser.parse_args()
    if args.jobs is None:
        args.jobs = 10_000 if args.mode == "throughput" else 1_000
    result = run(args)
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
