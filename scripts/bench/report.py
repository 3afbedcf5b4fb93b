"""``report.md`` and ``report.png`` from the suite's ``results.json``.

Each number in the report comes from the raw results: a cell ``m [a, b]`` is the
median ``m``, minimum ``a`` and maximum ``b`` over the runs. Goals are judged on the
medians, except where a line says otherwise.

    .venv/bin/python scripts/bench/suite.py --report-only   # rewrite from results.json
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Summary", "summarize", "write"]

OURS = "ours-sqlite"
PEERS = ("celery", "rq", "dramatiq", "procrastinate", "huey")
LABELS = {
    "ours-sqlite": "ours (SQLite)",
    "ours-postgres": "ours (PostgreSQL)",
    "celery": "Celery",
    "rq": "RQ",
    "dramatiq": "Dramatiq",
    "procrastinate": "procrastinate",
    "huey": "Huey",
}
#: Goals of the issue.
GOAL_JOBS_PER_S = 2000.0
GOAL_STOP_P99_S = 1.0
GOAL_RSS_GROWTH_MB = 50.0
#: More new threads than this for 10,000 waiting jobs counts as "a thread per job".
MAX_NEW_THREADS = 10
GOAL_SYNC_RATIO = 1.0
#: Goal of one node on PostgreSQL (``nodes.py``), jobs submitted one at a time.
GOAL_NODE_JOBS_PER_S = 1500.0
GOAL_COPY_RATIO = 1.2
#: Goals of the paced benchmark (issue 16), milliseconds, on ours (SQLite).
GOAL_PACED_P99_MS = 5.0
GOAL_PACED_MAX_MS = 20.0
#: Throughput one submit at a time over the fastest peer's (issue 16).
GOAL_PEER_RATIO = 3.0


class Summary:
    """Median, minimum and maximum of some runs' values (``None`` without values)."""

    def __init__(self, values: Sequence[float]) -> None:
        self.values = [float(v) for v in values]
        self.n = len(self.values)
        self.median = statistics.median(self.values) if self.values else None
        self.min = min(self.values) if self.values else None
        self.max = max(self.values) if self.values else None

    def cell(self, digits: int = 0, scale: float = 1.0) -> str:
        if self.median is None or self.min is None or self.max is None:
            return "—"

        def f(x: float) -> str:
            return f"{x * scale:,.{digits}f}"

        if self.n == 1:
            return f(self.median)
        return f"{f(self.median)} [{f(self.min)}, {f(self.max)}]"


def _ok(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if "error" not in r]


def _errors(runs: list[dict[str, Any]]) -> list[str]:
    return [r["error"] for r in runs if "error" in r]


def summarize(runs: list[dict[str, Any]], key: str | Callable[[dict[str, Any]], float]) -> Summary:
    get = key if callable(key) else (lambda r: r[key])
    return Summary([get(r) for r in _ok(runs)])


def _met(ok: bool | None) -> str:
    return "—" if ok is None else ("**met**" if ok else "**not met**")


def _finishes_everything(runs: list[dict[str, Any]]) -> bool | None:
    ok = _ok(runs)
    if not ok:
        return None
    return all(r["finished"] == r["jobs"] and r["lost"] == 0 for r in ok) and len(ok) == len(runs)


# -- sections -----------------------------------------------------------------------


def _throughput(results: dict[str, Any], lines: list[str]) -> dict[str, float]:
    """Writes the throughput table; returns each system's median jobs/s (systems
    without a successful run left out)."""
    plan = results["plan"]
    table = results["throughput"]
    jobs = plan["jobs"]
    medians: dict[str, float] = {}
    for system, runs in table.items():
        median = summarize(runs, "jobs_per_s").median
        if median is not None:
            medians[system] = median
    ours = medians.get(OURS)
    lines += [
        f"### Engine throughput: {jobs:,} no-op jobs, 8 workers",
        "",
        "| system | jobs/s | p50 latency ms | p99 latency ms | submits/s | CPU s | "
        "ours (SQLite) ÷ system |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for system, runs in table.items():
        s = summarize(runs, "jobs_per_s")
        ratio = f"{ours / s.median:.2f}x" if ours and s.median else "—"
        failed = _errors(runs)
        note = f" ({len(failed)} run(s) failed)" if failed else ""
        lines.append(
            f"| {LABELS[system]}{note} | {s.cell()} | "
            f"{summarize(runs, 'latency_p50_ms').cell()} | "
            f"{summarize(runs, 'latency_p99_ms').cell()} | "
            f"{summarize(runs, 'submit_per_s').cell()} | {summarize(runs, 'cpu_s').cell(1)} | "
            f"{ratio} |"
        )
    lines.append("")
    peers = [(s, medians[s]) for s in PEERS if s in medians]
    best = max(peers, key=lambda x: x[1], default=None)
    if best is not None:
        for system in ("ours-sqlite", "ours-postgres"):
            if medians.get(system):
                lines.append(
                    f"- {LABELS[system]} / best peer ({LABELS[best[0]]}, {best[1]:,.0f} jobs/s): "
                    f"**{medians[system] / best[1]:.2f}x**"
                )
        lines.append("")
    return medians


def _paced(results: dict[str, Any], lines: list[str]) -> list[str]:
    """The paced-latency table; the goal lines it judges."""
    table = results.get("paced") or {}
    if not any(table.values()):
        return []
    plan = results["plan"]
    lines += [
        f"### Steady rate: {plan['paced_jobs']:,} no-op jobs at {plan['paced_rate']:.0f}/s",
        "",
        "| system | measured to | p50 ms | p99 ms | max ms | p99 to the body's end ms | "
        "submits late, max ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for system, runs in table.items():
        if not runs:
            continue
        failed = _errors(runs)
        note = f" ({len(failed)} run(s) failed)" if failed else ""
        to = "end in the database" if system.startswith("ours-") else "end of the body"
        lines.append(
            f"| {LABELS[system]}{note} | {to} | {summarize(runs, 'latency_p50_ms').cell(2)} | "
            f"{summarize(runs, 'latency_p99_ms').cell(2)} | "
            f"{summarize(runs, 'latency_max_ms').cell(2)} | "
            f"{summarize(runs, 'body_p99_ms').cell(2)} | "
            f"{summarize(runs, 'submit_late_max_ms').cell(2)} |"
        )
    lines += [
        "",
        "One submit every 1/rate s on an absolute schedule; latency from just before the "
        "submit call. Ours is measured to the job's end in the database (the job listener, "
        "after the end write committed), a peer to the end of its job's body (its result "
        "is stored after that): the comparison favours the peers.",
        "",
    ]
    ours = table.get(OURS) or []
    p99 = summarize(ours, "latency_p99_ms")
    worst_max = summarize(ours, "latency_max_ms").max
    peers = {s: summarize(table.get(s) or [], "latency_p99_ms").median for s in PEERS}
    best = min(
        ((s, v) for s, v in peers.items() if v is not None), key=lambda x: x[1], default=None
    )
    goals = []
    if p99.median is not None:
        below = best is not None and p99.median < best[1]
        goals.append(
            f"| Steady {plan['paced_rate']:.0f} jobs/s on SQLite: p99 <= {GOAL_PACED_P99_MS:.0f} "
            "ms and below the best peer's p99 | "
            f"{p99.cell(2)} ms; best peer {LABELS[best[0]] if best else '—'} "
            f"{best[1] if best else '—'} ms | "
            f"{_met(p99.median <= GOAL_PACED_P99_MS and below)} |"
        )
    if worst_max is not None:
        goals.append(
            f"| Steady rate: max <= {GOAL_PACED_MAX_MS:.0f} ms | {worst_max:.2f} ms (worst run) | "
            f"{_met(worst_max <= GOAL_PACED_MAX_MS)} |"
        )
    return goals


def _durability(results: dict[str, Any], lines: list[str]) -> dict[str, bool | None]:
    plan = results["plan"]
    table = results["durability"]
    lines += [
        f"### Durability: SIGKILL of the worker with {plan['durability_jobs']:,} jobs in flight",
        "",
        "| system | in flight at the kill | finished | lost | run twice | "
        "all done (s after the kill) | every job finished, every run |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    everything: dict[str, bool | None] = {}
    for system, runs in table.items():
        ok = _ok(runs)
        done_s = [r["all_done_after_kill_s"] for r in ok if r["all_done_after_kill_s"] is not None]
        every = _finishes_everything(runs)
        everything[system] = every
        failed = _errors(runs)
        note = f" ({len(failed)} run(s) failed)" if failed else ""
        lines.append(
            f"| {LABELS[system]}{note} | {summarize(runs, 'in_flight_at_kill').cell()} | "
            f"{summarize(runs, 'finished').cell()} | {summarize(runs, 'lost').cell()} | "
            f"{summarize(runs, 'run_twice').cell()} | "
            f"{Summary(done_s).cell(1) if done_s else 'never'} | "
            f"{'—' if every is None else ('yes' if every else 'no')} |"
        )
    lines += [
        "",
        f"Jobs of {plan['durability_sleep_s'] * 1000:.0f} ms each; the SIGKILL comes once "
        f"{plan['durability_kill_after']} have run; after the restart the benchmark waits "
        f"until every job is done or none has completed for {plan['durability_idle_s']:.0f} s "
        "(counted from the restart plus the time the system's first start took to run its "
        "warm-up job). *lost* = the job's body never completed by then.",
        "",
    ]
    return everything


def _nodes(results: dict[str, Any], lines: list[str]) -> list[str]:
    """The several-nodes table (``nodes.py``); the goal lines it judges."""
    runs = _ok(results.get("nodes") or [])
    if not results.get("nodes"):
        return []
    lines += ["### Several nodes on one PostgreSQL (`nodes.py`)", ""]
    if not runs:
        lines += [f"Not run: {'; '.join(_errors(results['nodes'])) or 'no result'}", ""]
        return ["| Several nodes | not run | — |"]
    lines += [
        "| nodes | jobs/s | p50 latency ms | p99 latency ms | submits/s | "
        "CPU ms per job: nodes / PostgreSQL / submitter | lost | run twice |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rate: dict[int, float | None] = {}
    for count in sorted({t["nodes"] for r in runs for t in r["throughput"]}):
        rows = [t for r in runs for t in r["throughput"] if t["nodes"] == count]
        rate[count] = Summary([t["jobs_per_s"] for t in rows]).median
        cpu = " / ".join(
            Summary([t["cpu_ms_per_job"][k] for t in rows]).cell(2)
            for k in ("nodes", "postgres", "bench")
        )
        lines.append(
            f"| {count} | {summarize(rows, 'jobs_per_s').cell()} | "
            f"{summarize(rows, 'p50_ms').cell()} | {summarize(rows, 'p99_ms').cell()} | "
            f"{summarize(rows, 'submits_per_s').cell()} | {cpu} | "
            f"{summarize(rows, lambda t: len(t['lost'])).cell()} | "
            f"{summarize(rows, lambda t: len(t['ran_twice'])).cell()} |"
        )
    kills = [r["kill"] for r in runs if r.get("kill")]
    lines += [
        "",
        f"{runs[0]['throughput'][0]['jobs']:,} no-op jobs per row, submitted one at a time "
        "(an insert and its NOTIFY per transaction) from the benchmark's process to that "
        "many `jobservice worker` processes of 8 workers each; jobs/s from the first job's "
        "creation to the last one's end; latency from each job's row.",
        "",
    ]
    if kills:
        lines += [
            "| nodes | jobs | in flight at the kill | finished | lost | run twice | "
            "all done (s after the kill) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| {kills[0]['nodes']} | {kills[0]['jobs']:,} | "
            f"{summarize(kills, 'in_flight_at_kill').cell()} | "
            f"{summarize(kills, 'finished').cell()} | "
            f"{summarize(kills, lambda k: len(k['lost'])).cell()} | "
            f"{summarize(kills, lambda k: len(k['ran_twice'])).cell()} | "
            f"{summarize(kills, 'all_done_s_after_kill').cell(2)} |",
            "",
            f"Jobs of {kills[0]['job_ms']:g} ms, all queued in one insert; SIGKILL of one "
            "node once a third have run; the others hand its jobs back (heartbeat 1 s, "
            "node_timeout 5 s, or at once for a process of this machine that is gone).",
            "",
        ]
    goals = []
    one, three = rate.get(1), rate.get(3)
    if one is not None:
        goals.append(
            f"| One node on PostgreSQL >= {GOAL_NODE_JOBS_PER_S:,.0f} jobs/s, one submit at a "
            f"time (`nodes.py`) | {one:,.0f} jobs/s | {_met(one >= GOAL_NODE_JOBS_PER_S)} |"
        )
    if one is not None and three is not None:
        goals.append(
            f"| Three nodes >= one node in aggregate | {three:,.0f} against {one:,.0f} "
            f"jobs/s | {_met(three >= one)} |"
        )
    if kills:
        lost = max(len(k["lost"]) for k in kills)
        goals.append(
            f"| SIGKILL of one of three nodes: no job lost | {lost} lost (worst run) | "
            f"{_met(lost == 0)} |"
        )
    return goals


def _stop_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    stop = results.get("stop")
    return [] if not stop or "error" in stop else list(stop["runs"])


def _stop(results: dict[str, Any], lines: list[str]) -> bool | None:
    runs = _stop_runs(results)
    lines += ["### Stop latency during a 200 MB blob", ""]
    if not runs:
        stop = results.get("stop") or {}
        lines += [f"Not run: {stop.get('error', 'no result')}", ""]
        return None
    stops = sum(r["stops"] for r in runs)
    p50 = Summary([r["p50_s"] for r in runs])
    p99 = Summary([r["p99_s"] for r in runs])
    every = sorted(s for r in runs for s in r["seconds"])
    pooled = every[min(len(every) - 1, max(0, round(0.99 * len(every)) - 1))]
    lines += [
        "| stops per run | runs | p50 ms | p99 ms | p99 of all stops pooled, ms | "
        "slowest stop, ms |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {runs[0]['stops']} | {len(runs)} | {p50.cell(0, 1000)} | "
        f"{p99.cell(0, 1000)} | {pooled * 1000:,.0f} | {every[-1] * 1000:,.0f} |",
        "",
        f"{stops} stops in all.",
        "",
    ]
    assert p99.max is not None
    return p99.max <= GOAL_STOP_P99_S


def _retries(results: dict[str, Any], lines: list[str]) -> tuple[bool | None, bool | None]:
    runs = [r for r in _ok(results["retries"]) if "retrying" in r]
    lines += ["### Waiting retries", ""]
    if not runs:
        lines += [f"Not run: {'; '.join(_errors(results['retries'])) or 'no result'}", ""]
        return None, None
    jobs = runs[0]["retrying"]["retrying"]

    def growth(r: dict[str, Any]) -> float:
        return float(r["retrying"]["rss_after_mb"] - r["retrying"]["rss_before_mb"])

    def threads(r: dict[str, Any]) -> float:
        return float(r["retrying"]["threads_after"] - r["retrying"]["threads_before"])

    lines += [
        "| jobs in `retrying` | threads before | threads after | RSS before MB | "
        "RSS after MB | RSS growth MB |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {jobs:,} | {summarize(runs, lambda r: r['retrying']['threads_before']).cell()} | "
        f"{summarize(runs, lambda r: r['retrying']['threads_after']).cell()} | "
        f"{summarize(runs, lambda r: r['retrying']['rss_before_mb']).cell(1)} | "
        f"{summarize(runs, lambda r: r['retrying']['rss_after_mb']).cell(1)} | "
        f"{summarize(runs, growth).cell(1)} |",
        "",
        f"From `scripts/bench/engine.py` (its own no-op kind, pending → running → finished, "
        f"SQLite, 8 workers, no work state): "
        f"{summarize(runs, lambda r: r['throughput']['jobs_per_s']).cell()} jobs/s for "
        f"{runs[0]['throughput']['jobs']:,} jobs submitted one at a time, "
        f"{summarize(runs, lambda r: r['throughput_batch']['jobs_per_s']).cell()} jobs/s "
        "submitted in one `submit_many`, in the same runs (database and job logs in "
        f"{runs[0]['throughput']['folder']}, {runs[0]['throughput']['file_system']}; "
        "creating a file there took "
        f"{summarize(runs, lambda r: r['throughput'].get('file_create_us', 0)).cell()} us, "
        "a job log per job).",
        "",
    ]
    new_threads = max(threads(r) for r in runs)
    return new_threads <= MAX_NEW_THREADS, max(growth(r) for r in runs) <= GOAL_RSS_GROWTH_MB


def _replication(results: dict[str, Any], lines: list[str]) -> tuple[bool | None, bool | None]:
    rep = results.get("replication")
    lines += ["### Replication against skopeo", ""]
    if rep is None:
        lines += [
            "Not run (`--quick` leaves it out: building and pushing its images alone "
            "takes about 30 s).",
            "",
        ]
        return None, None
    if "error" in rep:
        lines += [f"Not run: {rep['error']}", ""]
        return None, None
    sec = rep["seconds"]
    lines += [
        f"Seconds, {rep['rounds']} rounds, each copy into a fresh empty target registry.",
        "",
        "| what | ours | skopeo copy | skopeo sync | ours ÷ skopeo |",
        "| --- | --- | --- | --- | --- |",
        f"| one image, 200 MiB in 3 layers | {Summary(sec['ours_image']).cell(2)} | "
        f"{Summary(sec['skopeo_copy_image']).cell(2)} | — | "
        f"{rep['ratio_image']:.2f}x copy |",
        f"| 10 tags sharing a 32 MiB base | {Summary(sec['ours_repository']).cell(2)} | "
        f"{Summary(sec['skopeo_copy_repository']).cell(2)} | "
        f"{Summary(sec['skopeo_sync_repository']).cell(2)} | "
        f"{rep['ratio_repository_sync']:.2f}x sync, {rep['ratio_repository_copy']:.2f}x copy |",
        "",
        f"RSS of the process running the service: idle {rep.get('rss_idle_mb', 0):.0f} MB, "
        f"peak while copying the 200 MB image {_peaks(rep)}.",
        "",
    ]
    return (
        rep["ratio_repository_sync"] <= GOAL_SYNC_RATIO,
        rep["ratio_image"] <= GOAL_COPY_RATIO,
    )


def _peaks(rep: dict[str, Any]) -> str:
    """replication.py's peak RSS: one number, or one per round (newer versions)."""
    by_round = rep.get("rss_peak_mb_by_round")
    if by_round:
        return f"{by_round[0]:.0f} MB in the first round, {max(by_round):.0f} MB at most"
    if "rss_peak_mb" in rep:
        return f"{rep['rss_peak_mb']:.0f} MB"
    return "not measured"


def _scan(results: dict[str, Any], lines: list[str]) -> None:
    runs = _ok(results["scan"])
    lines += ["### Scan", ""]
    if not runs:
        lines += [f"Not run: {'; '.join(_errors(results['scan'])) or 'no result'}", ""]
        return
    lines += [
        "| layers | MB (gzip) | seconds | MB/s | MB per CPU s | peak RSS MB | findings |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {runs[0]['layers']} | {runs[0]['layer_mb']:.0f} | "
        f"{summarize(runs, 'seconds').cell(2)} | {summarize(runs, 'mb_per_s').cell(0)} | "
        f"{summarize(runs, 'mb_per_cpu_s').cell(0)} | {summarize(runs, 'peak_rss_mb').cell(0)} | "
        f"{runs[0]['findings']} |",
        "",
        "One image scanned through the whole engine with the builtin backend, the scanning "
        f"process pinned to one CPU ({'yes' if runs[0]['one_cpu'] else 'no'} here). The scan "
        "issue's own goals: >= 100 MB/s on one core, peak RSS < 200 MB (informative here).",
        "",
    ]


def _machine(results: dict[str, Any], lines: list[str]) -> None:
    m = results["machine"]
    loads = results.get("load_samples") or [0.0]
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    lines += [
        "## Machine",
        "",
        f"- {m['cores']} cores ({m['cpu_model'] or 'unknown CPU'}), {m['memory_gib']} GiB "
        f"memory, Python {m['python']}, {m['platform']}",
        f"- load average (1 min): {results['load_before'][0]} at the start, "
        f"{Summary(loads).cell(1)} during the runs, {results['load_after'][0]} at the end "
        "(the machine was shared with other work while this ran)",
        f"- {m['redis_server']}; {m['postgresql']}; {m['skopeo']}; "
        f"docker-registry {m['docker_registry']}",
        f"- peers: {pk}",
        f"- started {results['started']}, {results['seconds'] / 60:.1f} minutes in all",
        "",
    ]


_METHOD = """\
## How it was measured

- **Throughput**: each system gets 8 workers (ours: a pool of 8 in the service; Celery:
  `--pool threads --concurrency 8`; RQ: 8 `SimpleWorker` processes, as RQ has no
  threads and a SimpleWorker runs one job at a time; Dramatiq: 1 process x 8 threads;
  procrastinate: `--concurrency 8`, an `async` task). Every job has the same body: a
  no-op that appends one fixed-width line (job number, `time.time()`) to a journal
  file of its process with a single `os.write`: no network, the same cost for all.
  The benchmark submits the jobs one call each (`submit`, `delay`, `enqueue`, `send`,
  `defer`), then waits until the journal has every job and the system itself reports
  every job done (our `finished` status; Celery `SUCCESS` results; RQ's finished
  registry; Dramatiq's stored results; procrastinate `succeeded`). jobs/s = jobs /
  (first submit → that report). Latency = a job's journal time - the moment just
  before its submit call, so it includes the wait behind the jobs submitted before
  it. CPU s = CPU time of the submitting process, the worker processes and the
  Redis or PostgreSQL server over the timed part. The peers' workers run in their
  own processes started by their command lines; ours runs in the submitting process
  (the embedded API), so submitting and running share one interpreter. Every run
  starts a fresh Redis (no persistence) or a new PostgreSQL database (fsync off, for
  ours and procrastinate alike), starts the workers and runs one warm-up job before
  the clock starts; the systems take turns in an order that rotates every round.
- **Durability**: the jobs sleep (they wait on a gate file first, so every job is
  queued before any runs), the benchmark SIGKILLs the worker's process group once
  some have run (for ours: the process running the service, which gets its jobs
  through a pipe), starts it again and waits until the system reports every job
  done or no job has completed for the idle time. *finished*: the system reports it
  done; *lost*: its body never completed; *run twice*: its body completed two times
  or more. Every peer runs with its defaults: Celery acknowledges a task before
  running it and redelivers unacknowledged (prefetched) ones after its Redis
  `visibility_timeout` (1 hour); RQ moves a dead worker's job to the failed registry;
  Dramatiq requeues a dead worker's messages from another worker's maintenance after
  its heartbeat timeout; procrastinate leaves a dead worker's jobs in `doing` until
  the user retries stalled jobs.
- **Stop latency**: `scripts/bench/stop_latency.py`: a replication job copies one
  200 MiB blob between two local `docker-registry` servers (the target with
  htpasswd auth); after the job's log says the blob is being sent and a random
  0-300 ms more, the time from `JobService.stop()` until `wait()` returns `stopped`.
  The goal is judged on the worst run's p99.
- **Retries**: `scripts/bench/engine.py`: jobs whose only step raises a retryable
  error, with a one-hour retry delay; threads and RSS of the process before
  submitting them and once all are `retrying`. Goal judged on the worst run.
- **Replication** (`scripts/bench/replication.py`) and **scan** (`scripts/bench/scan.py`):
  the scripts of those issues, unchanged; see their docstrings.
"""


def write(results: dict[str, Any], out: Path) -> None:
    """Writes ``out/report.md``, ``out/report.png`` and ``out/performance.md`` (the
    README's Performance section, from the same numbers)."""
    plan = results["plan"]
    lines = [
        "# jobservice benchmarks" + (" (--quick: reduced set)" if results["quick"] else ""),
        "",
        f"Each cell: median [min, max] over {plan['runs']} run(s). Reproduce with "
        f"`scripts/bench/run{' --quick' if results['quick'] else ''}`.",
        "",
    ]
    body: list[str] = ["## Results", ""]
    medians = _throughput(results, body)
    paced_goals = _paced(results, body)
    everything = _durability(results, body)
    stop_ok = _stop(results, body)
    threads_ok, rss_ok = _retries(results, body)
    sync_ok, copy_ok = _replication(results, body)
    _scan(results, body)
    node_goals = _nodes(results, body)

    ours = medians.get(OURS)
    qualified = {s: medians[s] for s in PEERS if everything.get(s) and medians.get(s) is not None}
    fastest_any = max(
        ((s, medians[s]) for s in PEERS if medians.get(s)), key=lambda x: x[1], default=None
    )
    goals = ["## Goals", "", "| goal | measured | result |", "| --- | --- | --- |"]
    # The goal is the engine benchmark's (scripts/bench/engine.py: its no-op kind, one
    # submit at a time, then one submit_many); the peers' table runs a job with a body.
    engine_runs = results["retries"]
    single = summarize(engine_runs, lambda r: r["throughput"]["jobs_per_s"]).median
    batch = summarize(engine_runs, lambda r: r["throughput_batch"]["jobs_per_s"]).median
    goals.append(
        f"| Engine >= {GOAL_JOBS_PER_S:,.0f} jobs/s on SQLite (`engine.py`, "
        f"{plan['jobs']:,} no-op jobs, 8 workers) | "
        + (
            "— | not measured |"
            if single is None or batch is None
            else f"{single:,.0f} jobs/s submitted one at a time, {batch:,.0f} in one "
            f"`submit_many` | {_met(min(single, batch) >= GOAL_JOBS_PER_S)} |"
        )
    )
    if qualified:
        best, rate = max(qualified.items(), key=lambda x: x[1])
        ratio = ours / rate if ours else None
        goals.append(
            f"| Engine >= 1.0x the fastest peer that finishes every job after a SIGKILL | "
            f"{'—' if ratio is None else f'{ratio:.2f}x'} {LABELS[best]} ({rate:,.0f} jobs/s) | "
            f"{_met(None if ratio is None else ratio >= 1.0)} |"
        )
    else:
        vs_any = (
            f"; against the fastest peer of all, {LABELS[fastest_any[0]]}: "
            f"{ours / fastest_any[1]:.2f}x"
            if fastest_any and ours
            else ""
        )
        ours_kept = everything.get(OURS)
        goals.append(
            "| Engine >= 1.0x the fastest peer that finishes every job after a SIGKILL | "
            f"no peer finished every job after the SIGKILL{vs_any}; ours did: "
            f"{'yes' if ours_kept else 'no'} | "
            f"{_met(bool(ours_kept)) if ours_kept is not None else '—'} (no peer qualifies) |"
        )
    if fastest_any and ours:
        goals.append(
            f"| Throughput one submit at a time >= {GOAL_PEER_RATIO:.0f}x the fastest peer | "
            f"{ours / fastest_any[1]:.2f}x {LABELS[fastest_any[0]]} "
            f"({fastest_any[1]:,.0f} jobs/s) | {_met(ours / fastest_any[1] >= GOAL_PEER_RATIO)} |"
        )
    goals += paced_goals
    worst_p99 = max((r["p99_s"] for r in _stop_runs(results)), default=None)
    goals.append(
        f"| Stop p99 <= 1 s during a 200 MB blob | "
        f"{'not run' if worst_p99 is None else f'{worst_p99 * 1000:,.0f} ms (worst run)'} | "
        f"{_met(stop_ok)} |"
    )
    retry_runs = [r for r in _ok(results["retries"]) if "retrying" in r]
    if retry_runs:
        r0 = retry_runs[0]["retrying"]
        new_threads = max(
            r["retrying"]["threads_after"] - r["retrying"]["threads_before"] for r in retry_runs
        )
        growth = max(
            r["retrying"]["rss_after_mb"] - r["retrying"]["rss_before_mb"] for r in retry_runs
        )
        goals.append(
            f"| Retries: no thread per waiting job ({r0['retrying']:,} jobs) | "
            f"{new_threads:+d} threads (worst run) | {_met(threads_ok)} |"
        )
        goals.append(
            f"| Retries: RSS growth <= {GOAL_RSS_GROWTH_MB:.0f} MB for 10,000 | "
            f"{growth:+.1f} MB for {r0['retrying']:,} (worst run) | {_met(rss_ok)} |"
        )
    else:
        goals.append("| Retries | not run | — |")
    rep = results.get("replication")
    sync_ratio = copy_ratio = "not run"
    if rep is not None and "error" not in rep:
        sync_ratio = f"{rep['ratio_repository_sync']:.2f}x"
        copy_ratio = f"{rep['ratio_image']:.2f}x"
    goals.append(
        f"| Replication <= 1.0x `skopeo sync` (10-tag repository) | {sync_ratio} | "
        f"{_met(sync_ok)} |"
    )
    goals.append(
        f"| Replication <= 1.2x `skopeo copy` (one image) | {copy_ratio} | {_met(copy_ok)} |"
    )
    goals += node_goals
    goals.append("")
    if results["quick"]:
        goals += [
            "The `--quick` set is smaller than the goals' conditions (fewer jobs, stops and "
            "retrying jobs, one run): its met / not met are a smoke test, not a verdict.",
            "",
        ]

    machine_lines: list[str] = []
    _machine(results, machine_lines)
    text = "\n".join(lines + goals + body + machine_lines + [_METHOD])
    (out / "report.md").write_text(text)
    if not results["quick"]:  # the README shows full runs only
        (out / "performance.md").write_text(_readme_section(results, goals + body + machine_lines))
    _chart(results, medians, out / "report.png")


_MEANINGS = """What each number means:

- *jobs/s*: no-op jobs submitted one call at a time, divided by the seconds from the
  first submit until the system itself reports every job done.
- *p50 / p99 latency*: from just before a job's submit call to the end of its body,
  with all the jobs submitted at once (so it includes the wait behind earlier jobs).
- *submits/s*: how fast the submitting loop went; *CPU s*: CPU seconds of every process
  involved (submitter, workers, Redis or PostgreSQL) for the whole batch.
- *finished / lost / run twice*: after a SIGKILL of the worker process and a restart,
  the jobs the system reports done, the jobs whose body never completed, and the jobs
  whose body completed more than once.
- *stop p99*: time from `JobService.stop()` to the job's `stopped` status while it
  copies a 200 MB blob.
- *threads / RSS*: of the service's process, before and after 10,000 jobs enter
  `retrying`.
- *replication ratio*: our replication's seconds over skopeo's for the same copy, into
  a fresh empty registry each time.
"""


def _readme_section(results: dict[str, Any], parts: list[str]) -> str:
    """The README's Performance section: the same tables, headings one level down."""
    demoted = [
        ("#" + line) if line.startswith("## ") or line.startswith("### ") else line
        for line in parts
    ]
    header = [
        "## Performance",
        "",
        "Numbers of the last full run of `scripts/bench/run` (each cell: median [min, max] "
        f"over {results['plan']['runs']} runs; ratios from the medians); reproduce with "
        "`scripts/bench/run`, which also writes `bench-results/report.md` (how each number "
        "is measured) and `bench-results/report.png`.",
        "",
    ]
    return "\n".join([*header, *demoted, _MEANINGS])


# -- the chart ----------------------------------------------------------------------


def _chart(results: dict[str, Any], medians: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(22, 10))
    fig.suptitle(
        "jobservice benchmarks"
        + (" (--quick)" if results["quick"] else "")
        + f": median, bars min to max over {results['plan']['runs']} run(s)"
    )
    systems = list(results["throughput"])
    names = [LABELS[s] for s in systems]
    colors = ["#1f77b4" if s.startswith("ours") else "#999999" for s in systems]

    def bars(ax: Any, labels: list[str], sums: list[Summary], title: str, unit: str) -> None:
        mid = [s.median or 0.0 for s in sums]
        low = [(s.median or 0.0) - (s.min or 0.0) for s in sums]
        high = [(s.max or 0.0) - (s.median or 0.0) for s in sums]
        ax.bar(labels, mid, yerr=[low, high], capsize=4, color=colors[: len(labels)])
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.tick_params(axis="x", rotation=30)
        for i, v in enumerate(mid):
            ax.annotate(f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=8)

    tp = results["throughput"]
    bars(
        axes[0][0],
        names,
        [summarize(tp[s], "jobs_per_s") for s in systems],
        f"throughput, {results['plan']['jobs']:,} no-op jobs",
        "jobs/s",
    )
    axes[0][0].axhline(GOAL_JOBS_PER_S, color="red", linestyle="--", linewidth=1)

    ax = axes[0][1]
    width = 0.4
    xs = range(len(systems))
    p50 = [summarize(tp[s], "latency_p50_ms").median or 0 for s in systems]
    p99 = [summarize(tp[s], "latency_p99_ms").median or 0 for s in systems]
    ax.bar([x - width / 2 for x in xs], p50, width, label="p50")
    ax.bar([x + width / 2 for x in xs], p99, width, label="p99")
    ax.set_xticks(list(xs), names, rotation=30)
    ax.set_yscale("log")
    ax.set_title("submit-to-done latency")
    ax.set_ylabel("ms (log)")
    ax.legend()

    ax = axes[0][2]
    du = results["durability"]
    width = 0.27
    for offset, key, label, color in (
        (-width, "finished", "finished", "#2ca02c"),
        (0.0, "lost", "lost", "#d62728"),
        (width, "run_twice", "run twice", "#ff7f0e"),
    ):
        ax.bar(
            [x + offset for x in xs],
            [summarize(du[s], key).median or 0 for s in systems],
            width,
            label=label,
            color=color,
        )
    ax.set_xticks(list(xs), names, rotation=30)
    ax.set_yscale("symlog")
    ax.set_title(f"SIGKILL with {results['plan']['durability_jobs']:,} jobs in flight")
    ax.set_ylabel("jobs (symlog)")
    ax.legend()

    ax = axes[0][3]
    stop_runs = _stop_runs(results)
    if stop_runs:
        every = [s * 1000 for r in stop_runs for s in r["seconds"]]
        ax.bar(range(len(every)), sorted(every), color="#1f77b4")
        ax.axhline(GOAL_STOP_P99_S * 1000, color="red", linestyle="--", linewidth=1)
        ax.set_xlabel("stops, sorted")
    else:
        ax.text(0.5, 0.5, "not run", ha="center", transform=ax.transAxes)
    ax.set_title("stop → stopped during a 200 MB blob")
    ax.set_ylabel("ms")

    ax = axes[1][0]
    rep = results.get("replication")
    if rep and "error" not in rep:
        sec = rep["seconds"]
        keys = [
            ("ours_image", "ours\nimage"),
            ("skopeo_copy_image", "skopeo copy\nimage"),
            ("ours_repository", "ours\n10 tags"),
            ("skopeo_sync_repository", "skopeo sync\n10 tags"),
            ("skopeo_copy_repository", "skopeo copy\n10 tags"),
        ]
        sums = [Summary(sec[k]) for k, _ in keys]
        ax.bar(
            [label for _, label in keys],
            [s.median or 0 for s in sums],
            yerr=[
                [(s.median or 0) - (s.min or 0) for s in sums],
                [(s.max or 0) - (s.median or 0) for s in sums],
            ],
            capsize=4,
            color=["#1f77b4", "#999999", "#1f77b4", "#999999", "#999999"],
        )
    else:
        ax.text(0.5, 0.5, "not run", ha="center", transform=ax.transAxes)
    ax.set_title("replication vs skopeo")
    ax.set_ylabel("seconds")

    retry_runs = [r for r in _ok(results["retries"]) if "retrying" in r]
    ax = axes[1][1]
    if retry_runs:
        labels = ["threads\nbefore", "threads\nafter"]
        sums = [
            summarize(retry_runs, lambda r: r["retrying"]["threads_before"]),
            summarize(retry_runs, lambda r: r["retrying"]["threads_after"]),
        ]
        ax.bar(labels, [s.median or 0 for s in sums], color="#1f77b4")
        ax.set_title(f"threads, {retry_runs[0]['retrying']['retrying']:,} jobs retrying")
        ax = axes[1][2]
        sums = [
            summarize(retry_runs, lambda r: r["retrying"]["rss_before_mb"]),
            summarize(retry_runs, lambda r: r["retrying"]["rss_after_mb"]),
        ]
        ax.bar(["RSS\nbefore", "RSS\nafter"], [s.median or 0 for s in sums], color="#1f77b4")
        ax.set_title(f"RSS, {retry_runs[0]['retrying']['retrying']:,} jobs retrying")
        ax.set_ylabel("MB")
    else:
        axes[1][1].text(0.5, 0.5, "not run", ha="center", transform=axes[1][1].transAxes)

    ax = axes[1][3]
    scan_runs = _ok(results["scan"])
    if scan_runs:
        sums = [summarize(scan_runs, "mb_per_s"), summarize(scan_runs, "peak_rss_mb")]
        ax.bar(["MB/s", "peak RSS MB"], [s.median or 0 for s in sums], color="#1f77b4")
        ax.set_title(f"scan, {scan_runs[0]['layer_mb']:.0f} MB of layers")
    else:
        ax.text(0.5, 0.5, "not run", ha="center", transform=ax.transAxes)

    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
