"""The report's tables, one function per benchmark: each appends its table's lines and
returns what its goals need."""

from __future__ import annotations

from typing import Any

from report_common import (
    GOAL_COPY_RATIO,
    GOAL_NODE_JOBS_PER_S,
    GOAL_PACED_MAX_MS,
    GOAL_PACED_P99_MS,
    GOAL_REPLICATION_RSS_MB,
    GOAL_RSS_GROWTH_MB,
    GOAL_STOP_P99_S,
    GOAL_SYNC_RATIO,
    LABELS,
    MAX_NEW_THREADS,
    OURS,
    PEERS,
    Summary,
    errors_of,
    finishes_everything,
    met,
    ok_runs,
    stop_runs,
    summarize,
)


def section_throughput(results: dict[str, Any], lines: list[str]) -> dict[str, float]:
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
        failed = errors_of(runs)
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


def section_paced(results: dict[str, Any], lines: list[str]) -> list[str]:
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
        failed = errors_of(runs)
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
            f"{met(p99.median <= GOAL_PACED_P99_MS and below)} |"
        )
    if worst_max is not None:
        goals.append(
            f"| Steady rate: max <= {GOAL_PACED_MAX_MS:.0f} ms | {worst_max:.2f} ms (worst run) | "
            f"{met(worst_max <= GOAL_PACED_MAX_MS)} |"
        )
    return goals


def section_durability(results: dict[str, Any], lines: list[str]) -> dict[str, bool | None]:
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
        ok = ok_runs(runs)
        done_s = [r["all_done_after_kill_s"] for r in ok if r["all_done_after_kill_s"] is not None]
        every = finishes_everything(runs)
        everything[system] = every
        failed = errors_of(runs)
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


#: How ``nodes.py`` submits by default (its rows without a ``mode`` predate the other).
ONE_AT_A_TIME = "one at a time"


def section_nodes(results: dict[str, Any], lines: list[str]) -> list[str]:
    """The several-nodes table (``nodes.py``); the goal lines it judges."""
    runs = ok_runs(results.get("nodes") or [])
    if not results.get("nodes"):
        return []
    lines += ["### Several nodes on one PostgreSQL (`nodes.py`)", ""]
    if not runs:
        lines += [f"Not run: {'; '.join(errors_of(results['nodes'])) or 'no result'}", ""]
        return ["| Several nodes | not run | — |"]
    lines += [
        "| nodes | submitted | jobs/s | p50 latency ms | p99 latency ms | submits/s | "
        "CPU ms per job: nodes / PostgreSQL / submitter | lost | run twice |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rate: dict[tuple[int, str], float | None] = {}
    keys = {(t["nodes"], t.get("mode", ONE_AT_A_TIME)) for r in runs for t in r["throughput"]}
    for count, mode in sorted(keys):
        rows = [
            t
            for r in runs
            for t in r["throughput"]
            if (t["nodes"], t.get("mode", ONE_AT_A_TIME)) == (count, mode)
        ]
        rate[count, mode] = Summary([t["jobs_per_s"] for t in rows]).median
        cpu = " / ".join(
            Summary([t["cpu_ms_per_job"][k] for t in rows]).cell(2)
            for k in ("nodes", "postgres", "bench")
        )
        lines.append(
            f"| {count} | {mode} | {summarize(rows, 'jobs_per_s').cell()} | "
            f"{summarize(rows, 'p50_ms').cell()} | {summarize(rows, 'p99_ms').cell()} | "
            f"{summarize(rows, 'submits_per_s').cell()} | {cpu} | "
            f"{summarize(rows, lambda t: len(t['lost'])).cell()} | "
            f"{summarize(rows, lambda t: len(t['ran_twice'])).cell()} |"
        )
    kills = [r["kill"] for r in runs if r.get("kill")]
    lines += [
        "",
        f"{runs[0]['throughput'][0]['jobs']:,} no-op jobs per row, to that many "
        "`jobservice worker` processes of 8 workers each, from the benchmark's process: "
        "submitted one at a time (an insert and its NOTIFY per transaction; jobs/s from the "
        "first job's creation to the last one's end), or queued in one insert (jobs/s from "
        "its commit to the last job's end); latency from each job's row.",
        "",
    ]
    if kills:
        lines += _kill_table(kills)
    return _nodes_goals(rate, kills)


def _nodes_goals(
    rate: dict[tuple[int, str], float | None], kills: list[dict[str, Any]]
) -> list[str]:
    goals = []
    one = rate.get((1, ONE_AT_A_TIME))
    if one is not None:
        goals.append(
            f"| One node on PostgreSQL >= {GOAL_NODE_JOBS_PER_S:,.0f} jobs/s, one submit at a "
            f"time (`nodes.py`) | {one:,.0f} jobs/s | {met(one >= GOAL_NODE_JOBS_PER_S)} |"
        )
    for mode in sorted({mode for _, mode in rate}):
        single, three = rate.get((1, mode)), rate.get((3, mode))
        if single is not None and three is not None:
            goals.append(
                f"| Three nodes >= one node in aggregate, {mode} | {three:,.0f} against "
                f"{single:,.0f} jobs/s | {met(three >= single)} |"
            )
    if kills:
        lost = max(len(k["lost"]) for k in kills)
        goals.append(
            f"| SIGKILL of one of three nodes: no job lost | {lost} lost (worst run) | "
            f"{met(lost == 0)} |"
        )
    return goals


def _kill_table(kills: list[dict[str, Any]]) -> list[str]:
    """The several-nodes kill runs' table and its note."""
    return [
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


def section_stop(results: dict[str, Any], lines: list[str]) -> bool | None:
    runs = stop_runs(results)
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


def section_retries(results: dict[str, Any], lines: list[str]) -> tuple[bool | None, bool | None]:
    runs = [r for r in ok_runs(results["retries"]) if "retrying" in r]
    lines += ["### Waiting retries", ""]
    if not runs:
        lines += [f"Not run: {'; '.join(errors_of(results['retries'])) or 'no result'}", ""]
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


def section_replication(
    results: dict[str, Any], lines: list[str]
) -> tuple[bool | None, bool | None, bool | None]:
    """The replication table; whether the sync, copy and RSS goals were met."""
    rep = results.get("replication")
    lines += ["### Replication against skopeo", ""]
    if rep is None:
        lines += [
            "Not run (`--quick` leaves it out: building and pushing its images alone "
            "takes about 30 s).",
            "",
        ]
        return None, None, None
    if "error" in rep:
        lines += [f"Not run: {rep['error']}", ""]
        return None, None, None
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
    peak = max(rep.get("rss_peak_mb_by_round") or [rep.get("rss_peak_mb", 0.0)])
    return (
        rep["ratio_repository_sync"] <= GOAL_SYNC_RATIO,
        rep["ratio_image"] <= GOAL_COPY_RATIO,
        peak < GOAL_REPLICATION_RSS_MB,
    )


def _peaks(rep: dict[str, Any]) -> str:
    """replication.py's peak RSS: one number, or one per round (newer versions)."""
    by_round = rep.get("rss_peak_mb_by_round")
    if by_round:
        return f"{by_round[0]:.0f} MB in the first round, {max(by_round):.0f} MB at most"
    if "rss_peak_mb" in rep:
        return f"{rep['rss_peak_mb']:.0f} MB"
    return "not measured"


def section_scan(results: dict[str, Any], lines: list[str]) -> None:
    runs = ok_runs(results["scan"])
    lines += ["### Scan", ""]
    if not runs:
        lines += [f"Not run: {'; '.join(errors_of(results['scan'])) or 'no result'}", ""]
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


def section_machine(results: dict[str, Any], lines: list[str]) -> None:
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


METHOD = """\
## How it was measured

- **Throughput**: each system gets 8 workers (ours: a pool of 8 in the service; Celery:
  `--pool threads --concurrency 8`; RQ: 8 `SimpleWorker` processes, as RQ has no
  threads and a SimpleWorker runs one job at a time; Dramatiq: 1 process x 8 threads;
  procrastinate: `--concurrency 8`, an `async` task; Huey: 1 consumer process of 8
  worker threads, Redis storage, results stored). Every job has the same body: a
  no-op that appends one fixed-width line (job number, `time.time()`) to a journal
  file of its process with a single `os.write`: no network, the same cost for all.
  The benchmark submits the jobs one call each (`submit`, `delay`, `enqueue`, `send`,
  `defer`), then waits until the journal has every job and the system itself reports
  every job done (our `finished` status; Celery `SUCCESS` results; RQ's finished
  registry; Dramatiq's stored results; procrastinate `succeeded`; Huey's stored
  results). jobs/s = jobs /
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
  the user retries stalled jobs; Huey takes a task off its Redis queue before it runs
  it, so a task in a killed consumer's hands is gone.
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
