#!/usr/bin/env python3
"""Several nodes on one PostgreSQL: throughput with 1, 2, 3 ``jobservice worker``
processes on this machine, and a SIGKILL of one of three with jobs in flight.

Starts a throw-away PostgreSQL cluster (``tests/postgres.py``, fsync off) unless given
one (``--pg-port``), a new database per measurement, and that many nodes: ``jobservice
worker`` processes with the same settings (the kind of :mod:`nodes_kinds`, 8 workers;
heartbeat 1 s, node_timeout 5 s, poll 2 s; a log folder per node in the temporary
folder). Every node is live and has run a warm-up job before the clock starts.

- *throughput*: ``--jobs`` no-op jobs submitted one at a time from this process (one
  insert transaction per job with its ``NOTIFY`` to one live node, which passes it on
  when it cannot take the work: ``Store.insert_jobs(wake=…)`` with ``notify_others``,
  from a store of no node); then queued in one insert (timed from its commit); then one at a
  time from ``--submitters`` threads at once. Before each run, what creating a file
  costs in the logs' folder (see :mod:`scratch`). Aggregate jobs/s from the first
  job's ``creation_time`` to the last job's ``update_time`` (its ``finished`` write);
  latency p50/p99 per job, the
  same two columns of its row; the jobs each node ran (``node_id``); CPU seconds per
  job of the nodes, PostgreSQL's processes and this process.
- *kill*: 3 nodes, ``--kill-jobs`` jobs of ``--kill-ms`` ms each submitted in one
  insert (all pending at once), SIGKILL of one node once a third of them have run;
  then lost jobs (must be 0), jobs whose body ran twice, seconds from the kill until
  every job is finished.

Every job's body writes its id to its node's journal (:mod:`journal`): a job that
never ends ``finished``, or whose body ran other than exactly once (the kill part
excepted), is printed as a loss or a double run.

    .venv/bin/python scripts/bench/nodes.py [--jobs 10000] [--nodes 1,2,3] [--quick]
        [--json FILE] [--pg-port PORT --pg-dir DIR] [--dir D] [--no-kill]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parents[1]
for extra in (ROOT, BENCH):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import journal  # noqa: E402
import scratch  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from nodes_kinds import KIND  # noqa: E402
from nodes_print import print_results  # noqa: E402
from procfs import cpu_s, postgres_pids, postmaster_pid, thread_cpu, thread_names  # noqa: E402
from servers import new_database, postgres_cluster  # noqa: E402

from model.db import Store, migrations  # noqa: E402
from model.stamps import aware  # noqa: E402
from model.status import Status  # noqa: E402

__all__ = ["main"]

JOBSERVICE = Path(sys.executable).with_name("jobservice")
#: Node settings (seconds).
HEARTBEAT_S, NODE_TIMEOUT_S, POLL_S = 1.0, 5.0, 2.0
#: Seconds a node may take to register and run its warm-up job.
START_TIMEOUT_S = 60.0
#: Seconds between two looks at the database while waiting for the jobs' ends.
WAIT_STEP_S = 0.1
#: Seconds the jobs may take to end after the last submit (or the kill).
DONE_TIMEOUT_S = 600.0


class Node:
    """One ``jobservice worker`` process of the benchmark."""

    def __init__(self, work: Path, url: str, name: str, journal_dir: Path) -> None:
        self.name = name
        self.log_path = work / f"{name}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("JOBSERVICE_", "UI_"))},
            "PYTHONPATH": os.pathsep.join([str(BENCH), str(ROOT)]),
            journal.ENV: str(journal_dir),
            "JOBSERVICE_DATABASE_URL": url,
            "JOBSERVICE_LOG_DIR": str(work / "logs" / name),
            "JOBSERVICE_KEY_PATH": str(work / "jobservice.key"),
            "JOBSERVICE_NODE_NAME": name,
            "JOBSERVICE_HEARTBEAT_INTERVAL": str(HEARTBEAT_S),
            "JOBSERVICE_NODE_TIMEOUT": str(NODE_TIMEOUT_S),
            "JOBSERVICE_POLL_INTERVAL": str(POLL_S),
            "JOBSERVICE_SHUTDOWN_TIMEOUT": "10",
            "JOBSERVICE_LOG_LEVEL": "WARNING",
            "JOBSERVICE_KIND_MODULES": json.dumps(["nodes_kinds:kinds"]),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.id: int | None = None

    def start(self) -> Node:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(JOBSERVICE), "worker"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def live(self, store: Store) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"node {self.name} exited {self.process.returncode}: {tail}")
        for row in store.nodes.rows(60):
            if row["name"] == self.name and row["state"] == "live" and row["pid"] == self.pid:
                self.id = int(row["id"])
                return True
        return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()


def wait_for(condition: Any, timeout: float, what: str) -> float:
    """Polls ``condition()`` until true; the seconds it took. Raises on the deadline."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        time.sleep(WAIT_STEP_S)
    return time.monotonic() - started


def finished_count(store: Store, first_id: int) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM job WHERE kind = :k AND status = :s AND id >= :i"),
                {"k": KIND, "s": Status.FINISHED.value, "i": first_id},
            ).scalar_one()
        )


#: Literal statuses, as in the indexes' predicates (a parameter would not match them).
_UNFINISHED = sa.text(
    f"SELECT (SELECT count(*) FROM job WHERE status IN ('{Status.PENDING.value}', "
    f"'{Status.RETRYING.value}')) "
    f"+ (SELECT count(*) FROM job WHERE status = '{Status.RUNNING.value}')"
)


def unfinished(store: Store) -> int:
    """Jobs waiting or running: two counts over the claim's and the take-over's partial
    indexes, so that waiting for the end costs the database little however many
    finished rows the table holds (a count of the finished ones reads them all)."""
    with store.engine.connect() as conn:
        return int(conn.execute(_UNFINISHED).scalar_one())


def job_rows(store: Store, ids: list[int]) -> list[tuple[int, str, int | None, datetime, datetime]]:
    """(id, status, node_id, creation_time, update_time) of the jobs ``ids``."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT id, status, node_id, creation_time, update_time FROM job "
                "WHERE id >= :lo AND id <= :hi ORDER BY id"
            ),
            {"lo": min(ids), "hi": max(ids)},
        ).all()
    wanted = set(ids)
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows if r[0] in wanted]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def check_once(
    rows: list[tuple[int, str, int | None, datetime, datetime]], runs: dict[int, list[float]]
) -> tuple[list[int], list[int]]:
    """(lost, ran twice): jobs not finished or whose body never ran; bodies run > once."""
    lost = [r[0] for r in rows if r[1] != Status.FINISHED.value or not runs.get(r[0])]
    twice = [r[0] for r in rows if len(runs.get(r[0], [])) > 1]
    return lost, twice


@contextmanager
def node_group(
    count: int, url: str, work: Path, journal_dir: Path, store: Store
) -> Iterator[list[Node]]:
    """``count`` live nodes, each having run one warm-up job; stopped (SIGTERM) at exit."""
    nodes = [Node(work, url, f"n{i + 1}", journal_dir) for i in range(count)]
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            wait_for(lambda n=node: n.live(store), START_TIMEOUT_S, f"node {node.name} start")
        # A warm-up job per node and more: each node's pool, connections and log
        # writer have run once before the clock starts.
        warm = store.insert_jobs("job", [{"kind": KIND, "params": {}}] * (8 * count), wake=KIND)
        wait_for(
            lambda: finished_count(store, warm[0]) >= len(warm), START_TIMEOUT_S, "warm-up jobs"
        )
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def fresh_database(pg_port: int, journal_dir: Path) -> tuple[str, Store]:
    url = new_database(pg_port).replace("postgresql://", "postgresql+psycopg://", 1)
    migrations.upgrade(url)
    store = Store(url)
    store.notify_others = True  # as a node's store with others live: submits NOTIFY
    shutil.rmtree(journal_dir, ignore_errors=True)
    journal_dir.mkdir(parents=True)
    return url, store


def cpu_now(nodes: list[Node], pg_dir: Path | None) -> dict[str, float]:
    """CPU seconds used so far by the nodes, PostgreSQL's processes and this one."""
    pg = postgres_pids(postmaster_pid(pg_dir))
    return {
        "nodes": sum(cpu_s(n.pid) for n in nodes),
        "postgres": sum(map(cpu_s, pg)),
        "bench": cpu_s(os.getpid()),
    }


def busiest_threads(pid: int, before: dict[int, float]) -> dict[str, float]:
    """CPU seconds each thread of ``pid`` used since ``before``, the busiest first."""
    now = thread_cpu(pid)
    named = thread_names(pid)
    spent = {t: now[t] - before.get(t, 0.0) for t in now}
    busiest = sorted(((s, t) for t, s in spent.items() if s), reverse=True)
    return {f"{t} {named.get(t, '')}".strip(): round(s, 2) for s, t in busiest}


def submit(
    store: Store, jobs: int, queued: bool, submitters: int
) -> tuple[list[int], datetime | None]:
    """Submits ``jobs`` no-op jobs: in one insert when ``queued`` (then also the time of
    its commit), else one at a time from each of ``submitters`` threads at once (as the
    clients of nodes behind a load balancer would). Returns their ids in order."""
    row = {"kind": KIND, "params": {}}
    if queued:
        ids = store.insert_jobs("job", [row] * jobs, wake=KIND)
        return ids, datetime.now(UTC)

    def one_by_one(n: int) -> list[int]:
        return [store.insert_jobs("job", [row], wake=KIND)[0] for _ in range(n)]

    shares = [jobs // submitters + (i < jobs % submitters) for i in range(submitters)]
    with ThreadPoolExecutor(submitters) as threads:
        found = list(threads.map(one_by_one, shares))
    return sorted(i for ids in found for i in ids), None


def mode(queued: bool, submitters: int) -> str:
    """How a row's jobs were submitted, as the report names it."""
    if queued:
        return "queued"
    return "one at a time" if submitters == 1 else f"{submitters} submitters"


def throughput(
    pg_port: int,
    pg_dir: Path | None,
    work: Path,
    count: int,
    jobs: int,
    queued: bool = False,
    submitters: int = 1,
) -> dict[str, Any]:
    """``jobs`` no-op jobs through ``count`` nodes, submitted as :func:`submit` says;
    timed from the first job's creation, or the queued insert's commit."""
    journal_dir = work / "journal"
    url, store = fresh_database(pg_port, journal_dir)
    try:
        with node_group(count, url, work, journal_dir, store) as nodes:
            node_threads_before = {n.pid: thread_cpu(n.pid) for n in nodes}
            before = cpu_now(nodes, pg_dir)
            warm_lines = journal.count(journal_dir)
            create_us = scratch.file_create_us(work / "logs")
            started = time.monotonic()
            ids, committed = submit(store, jobs, queued, submitters)
            submit_s = time.monotonic() - started
            wait_for(lambda: unfinished(store) == 0, DONE_TIMEOUT_S, "jobs")
            waited_s = time.monotonic() - started
            after = cpu_now(nodes, pg_dir)  # PostgreSQL: the backends of the same sessions
            threads = {n.name: busiest_threads(n.pid, node_threads_before[n.pid]) for n in nodes}
            by_node_id = {n.id: n.name for n in nodes}
        rows = job_rows(store, ids)
        runs = journal.read(journal_dir)
        lost, twice = check_once(rows, runs)
        start = committed or aware(min(r[3] for r in rows))
        end = aware(max(r[4] for r in rows))
        seconds = (end - start).total_seconds()
        latencies = [(r[4] - r[3]).total_seconds() * 1000 for r in rows]
        per_node = Counter(by_node_id.get(r[2], str(r[2])) for r in rows)
        cpu = {k: round(after[k] - before[k], 2) for k in before}
        return {
            "nodes": count,
            "mode": mode(queued, submitters),
            "jobs": jobs,
            "jobs_per_s": round(jobs / seconds, 1),
            "seconds": round(seconds, 3),
            "submits_per_s": round(jobs / submit_s, 1),
            "waited_s": round(waited_s, 2),
            "p50_ms": round(percentile(latencies, 50), 1),
            "p99_ms": round(percentile(latencies, 99), 1),
            "per_node": dict(sorted(per_node.items())),
            "lost": lost,
            "ran_twice": twice,
            "journal_lines": journal.count(journal_dir) - warm_lines,
            "cpu_s": cpu,
            "cpu_ms_per_job": {k: round(v * 1000 / jobs, 3) for k, v in cpu.items()},
            "node_thread_cpu_s": threads,
            "file_create_us": create_us,
        }
    finally:
        store.close()


def kill_run(
    pg_port: int, work: Path, jobs: int, ms: float, nodes_count: int = 3
) -> dict[str, Any]:
    journal_dir = work / "journal"
    url, store = fresh_database(pg_port, journal_dir)
    try:
        with node_group(nodes_count, url, work, journal_dir, store) as nodes:
            warm_lines = journal.count(journal_dir)
            rows_in = [{"kind": KIND, "params": {"ms": ms}}] * jobs
            ids = store.insert_jobs("job", rows_in, wake=KIND)
            wait_for(
                lambda: journal.count(journal_dir) - warm_lines >= jobs // 3,
                DONE_TIMEOUT_S,
                "a third of the jobs",
            )
            victim = nodes[0]
            killed_at = datetime.now(UTC)
            kill_clock = time.monotonic()
            victim.kill()
            done_at_kill = journal.count(journal_dir) - warm_lines
            running_on_victim = _running_on(store, ids, victim.id)
            finished_at_kill = finished_count(store, ids[0])
            wait_for(lambda: unfinished(store) == 0, DONE_TIMEOUT_S, "all jobs")
            waited_s = time.monotonic() - kill_clock
        rows = job_rows(store, ids)
        runs = journal.read(journal_dir)
        lost, twice = check_once(rows, runs)
        end = aware(max(r[4] for r in rows))
        return {
            "nodes": nodes_count,
            "jobs": jobs,
            "job_ms": ms,
            "bodies_done_at_kill": done_at_kill,
            "finished_at_kill": finished_at_kill,
            "in_flight_at_kill": jobs - finished_at_kill,
            "running_on_killed_node": running_on_victim,
            "finished": sum(1 for r in rows if r[1] == Status.FINISHED.value),
            "lost": lost,
            "ran_twice": twice,
            "all_done_s_after_kill": round((end - killed_at).total_seconds(), 2),
            "waited_s": round(waited_s, 2),
        }
    finally:
        store.close()


def _running_on(store: Store, ids: list[int], node_id: int | None) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM job WHERE status = :s AND node_id = :n "
                    "AND id >= :lo AND id <= :hi"
                ),
                {"s": Status.RUNNING.value, "n": node_id, "lo": min(ids), "hi": max(ids)},
            ).scalar_one()
        )


def run(args: argparse.Namespace) -> dict[str, Any]:
    counts = [int(n) for n in args.nodes.split(",")]
    result: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "settings": {
            "workers_per_node": 8,
            "heartbeat_s": HEARTBEAT_S,
            "node_timeout_s": NODE_TIMEOUT_S,
            "poll_s": POLL_S,
        },
        "throughput": [],
        "kill": None,
    }
    with ExitStack() as stack:
        pg_port, pg_dir = args.pg_port, Path(args.pg_dir) if args.pg_dir else None
        if pg_port is None:
            cluster = stack.enter_context(postgres_cluster())
            pg_port, pg_dir = cluster.port, cluster.folder
        base = stack.enter_context(scratch.folder("bench-nodes-", args.dir))
        ways = [(False, 1), (True, 1)][: args.modes]
        ways += [(False, args.submitters)] if args.submitters > 1 else []
        runs = [(count, queued, n) for count in counts for queued, n in ways]
        for run_no, (count, queued, n) in enumerate(runs, 1):
            work = base / f"throughput-{run_no}-{count}"
            work.mkdir()
            print(f"{count} node(s), {args.jobs:,} jobs, {mode(queued, n)} …", flush=True)
            result["throughput"].append(
                throughput(pg_port, pg_dir, work, count, args.jobs, queued, n)
            )
        if not args.no_kill:
            work = base / "kill"
            work.mkdir()
            print(f"SIGKILL of one of 3 nodes, {args.kill_jobs:,} jobs …", flush=True)
            result["kill"] = kill_run(pg_port, work, args.kill_jobs, args.kill_ms)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000, help="no-op jobs per node count")
    parser.add_argument("--nodes", default="1,2,3", help="node counts, commas")
    parser.add_argument(
        "--one-at-a-time-only",
        dest="modes",
        action="store_const",
        const=1,
        default=2,
        help="leave out the runs of jobs queued in one insert",
    )
    parser.add_argument(
        "--submitters",
        type=int,
        default=3,
        help="also submit one at a time from this many threads at once (1: not)",
    )
    parser.add_argument("--kill-jobs", type=int, default=1_000)
    parser.add_argument("--kill-ms", type=float, default=20.0, help="ms of each kill-part job")
    parser.add_argument("--no-kill", action="store_true", help="leave out the kill part")
    parser.add_argument("--quick", action="store_true", help="1,000 jobs, 300 for the kill")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--pg-port", type=int, help="a running cluster (default: start one)")
    parser.add_argument("--pg-dir", help="that cluster's folder (for its CPU time)")
    parser.add_argument("--dir", help="folder for the nodes' logs (default: TMPDIR)")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.kill_jobs = min(args.jobs, 1_000), min(args.kill_jobs, 300)
    result = run(args)
    print()
    print_results(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
