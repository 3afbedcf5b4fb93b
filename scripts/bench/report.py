"""``report.md`` and ``report.png`` from the suite's ``results.json``.

Each number in the report comes from the raw results: a cell ``m [a, b]`` is the
median ``m``, minimum ``a`` and maximum ``b`` over the runs. Goals are judged on the
medians, except where a line says otherwise.

    .venv/bin/python scripts/bench/suite.py --report-only   # rewrite from results.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from report_common import (
    GOAL_COPY_RATIO,
    GOAL_JOBS_PER_S,
    GOAL_PEER_RATIO,
    GOAL_REPLICATION_RSS_MB,
    GOAL_RSS_GROWTH_MB,
    GOAL_SYNC_RATIO,
    LABELS,
    OURS,
    PEERS,
    Summary,
    met,
    ok_runs,
    stop_runs,
    summarize,
)
from report_sections import (
    METHOD,
    section_durability,
    section_machine,
    section_nodes,
    section_paced,
    section_replication,
    section_retries,
    section_scan,
    section_stop,
    section_throughput,
)

__all__ = ["Summary", "summarize", "write"]


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
    medians = section_throughput(results, body)
    paced_goals = section_paced(results, body)
    everything = section_durability(results, body)
    stop_ok = section_stop(results, body)
    threads_ok, rss_ok = section_retries(results, body)
    sync_ok, copy_ok, replication_rss_ok = section_replication(results, body)
    section_scan(results, body)
    node_goals = section_nodes(results, body)

    goals = ["## Goals", "", "| goal | measured | result |", "| --- | --- | --- |"]
    goals += _engine_goals(results, medians, everything)
    goals += paced_goals
    goals += _other_goals(results, stop_ok, threads_ok, rss_ok, sync_ok, copy_ok)
    goals += _replication_rss_goal(results, replication_rss_ok)
    goals += node_goals
    goals.append("")
    if results["quick"]:
        goals += [
            "The `--quick` set is smaller than the goals' conditions (fewer jobs, stops and "
            "retrying jobs, one run): its met / not met are a smoke test, not a verdict.",
            "",
        ]

    machine_lines: list[str] = []
    section_machine(results, machine_lines)
    text = "\n".join(lines + goals + body + machine_lines + [METHOD])
    (out / "report.md").write_text(text)
    if not results["quick"]:  # the README shows full runs only
        (out / "performance.md").write_text(_readme_section(results, goals + body + machine_lines))
    from report_chart import chart

    chart(results, medians, out / "report.png")


def _engine_goals(
    results: dict[str, Any], medians: dict[str, float], everything: dict[str, bool | None]
) -> list[str]:
    """The engine's goals: its own rate, against the peers that keep every job, and
    against the fastest peer."""
    ours = medians.get(OURS)
    qualified = {s: medians[s] for s in PEERS if everything.get(s) and medians.get(s) is not None}
    fastest_any = max(
        ((s, medians[s]) for s in PEERS if medians.get(s)), key=lambda x: x[1], default=None
    )
    goals: list[str] = []
    plan = results["plan"]
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
            f"`submit_many` | {met(min(single, batch) >= GOAL_JOBS_PER_S)} |"
        )
    )
    if qualified:
        best, rate = max(qualified.items(), key=lambda x: x[1])
        ratio = ours / rate if ours else None
        goals.append(
            f"| Engine >= 1.0x the fastest peer that finishes every job after a SIGKILL | "
            f"{'—' if ratio is None else f'{ratio:.2f}x'} {LABELS[best]} ({rate:,.0f} jobs/s) | "
            f"{met(None if ratio is None else ratio >= 1.0)} |"
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
            f"{met(bool(ours_kept)) if ours_kept is not None else '—'} (no peer qualifies) |"
        )
    if fastest_any and ours:
        goals.append(
            f"| Throughput one submit at a time >= {GOAL_PEER_RATIO:.0f}x the fastest peer | "
            f"{ours / fastest_any[1]:.2f}x {LABELS[fastest_any[0]]} "
            f"({fastest_any[1]:,.0f} jobs/s) | {met(ours / fastest_any[1] >= GOAL_PEER_RATIO)} |"
        )
    return goals


def _other_goals(
    results: dict[str, Any],
    stop_ok: bool | None,
    threads_ok: bool | None,
    rss_ok: bool | None,
    sync_ok: bool | None,
    copy_ok: bool | None,
) -> list[str]:
    """The goals of stops, retries and replication."""
    goals: list[str] = []
    worst_p99 = max((r["p99_s"] for r in stop_runs(results)), default=None)
    goals.append(
        f"| Stop p99 <= 1 s during a 200 MB blob | "
        f"{'not run' if worst_p99 is None else f'{worst_p99 * 1000:,.0f} ms (worst run)'} | "
        f"{met(stop_ok)} |"
    )
    retry_runs = [r for r in ok_runs(results["retries"]) if "retrying" in r]
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
            f"{new_threads:+d} threads (worst run) | {met(threads_ok)} |"
        )
        goals.append(
            f"| Retries: RSS growth <= {GOAL_RSS_GROWTH_MB:.0f} MB for 10,000 | "
            f"{growth:+.1f} MB for {r0['retrying']:,} (worst run) | {met(rss_ok)} |"
        )
    else:
        goals.append("| Retries | not run | — |")
    rep = results.get("replication")
    sync_ratio = copy_ratio = "not run"
    if rep is not None and "error" not in rep:
        sync_ratio = f"{rep['ratio_repository_sync']:.2f}x"
        copy_ratio = f"{rep['ratio_image']:.2f}x"
    goals.append(
        f"| Replication <= {GOAL_SYNC_RATIO:.1f}x `skopeo sync` (10-tag repository) | "
        f"{sync_ratio} | {met(sync_ok)} |"
    )
    goals.append(
        f"| Replication <= {GOAL_COPY_RATIO:.1f}x `skopeo copy` (one image) | {copy_ratio} | "
        f"{met(copy_ok)} |"
    )
    return goals


def _replication_rss_goal(results: dict[str, Any], ok: bool | None) -> list[str]:
    rep = results.get("replication")
    peaks = (rep or {}).get("rss_peak_mb_by_round") or []
    measured = f"{max(peaks):.0f} MB (highest round)" if peaks else "not run"
    return [
        f"| Replication: RSS < {GOAL_REPLICATION_RSS_MB:.0f} MB while copying the 200 MB image "
        f"| {measured} | {met(ok)} |"
    ]


_MEANINGS = """What each number means:

- *jobs/s*: no-op jobs submitted one call at a time, divided by the seconds from the
  first submit until the system itself reports every job done.
- *p50 / p99 latency*: from just before a job's submit call to the end of its body,
  with all the jobs submitted at once (so it includes the wait behind earlier jobs).
- *steady rate p50 / p99 / max*: jobs submitted one every 1/rate s on an absolute
  schedule; from just before a job's submit call to its end in the database (ours)
  or to the end of its body (a peer, whose result is stored after that).
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
