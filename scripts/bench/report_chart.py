"""``report.png``: the suite's numbers as bar charts (matplotlib, imported when drawn)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from report_common import (
    GOAL_JOBS_PER_S,
    GOAL_STOP_P99_S,
    LABELS,
    Summary,
    ok_runs,
    stop_runs,
    summarize,
)

__all__ = ["chart"]


def chart(results: dict[str, Any], medians: dict[str, float], path: Path) -> None:
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

    _throughput(axes[0][0], results, systems, names, colors)
    _latency(axes[0][1], results, systems, names)
    _durability(axes[0][2], results, systems, names)
    _stops(axes[0][3], results)
    _replication(axes[1][0], results)
    _retries(axes[1][1], axes[1][2], results)
    _scan(axes[1][3], results)

    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _bars(
    ax: Any, labels: list[str], sums: list[Summary], title: str, unit: str, colors: list[str]
) -> None:
    mid = [s.median or 0.0 for s in sums]
    low = [(s.median or 0.0) - (s.min or 0.0) for s in sums]
    high = [(s.max or 0.0) - (s.median or 0.0) for s in sums]
    ax.bar(labels, mid, yerr=[low, high], capsize=4, color=colors[: len(labels)])
    ax.set_title(title)
    ax.set_ylabel(unit)
    ax.tick_params(axis="x", rotation=30)
    for i, v in enumerate(mid):
        ax.annotate(f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=8)


def _throughput(
    ax: Any, results: dict[str, Any], systems: list[str], names: list[str], colors: list[str]
) -> None:
    tp = results["throughput"]
    _bars(
        ax,
        names,
        [summarize(tp[s], "jobs_per_s") for s in systems],
        f"throughput, {results['plan']['jobs']:,} no-op jobs",
        "jobs/s",
        colors,
    )
    ax.axhline(GOAL_JOBS_PER_S, color="red", linestyle="--", linewidth=1)


def _latency(ax: Any, results: dict[str, Any], systems: list[str], names: list[str]) -> None:
    tp = results["throughput"]
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


def _durability(ax: Any, results: dict[str, Any], systems: list[str], names: list[str]) -> None:
    xs = range(len(systems))
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


def _stops(ax: Any, results: dict[str, Any]) -> None:
    stops = stop_runs(results)
    if stops:
        every = [s * 1000 for r in stops for s in r["seconds"]]
        ax.bar(range(len(every)), sorted(every), color="#1f77b4")
        ax.axhline(GOAL_STOP_P99_S * 1000, color="red", linestyle="--", linewidth=1)
        ax.set_xlabel("stops, sorted")
    else:
        ax.text(0.5, 0.5, "not run", ha="center", transform=ax.transAxes)
    ax.set_title("stop → stopped during a 200 MB blob")
    ax.set_ylabel("ms")


def _replication(ax: Any, results: dict[str, Any]) -> None:
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


def _retries(ax: Any, rss_ax: Any, results: dict[str, Any]) -> None:
    retry_runs = [r for r in ok_runs(results["retries"]) if "retrying" in r]
    if retry_runs:
        labels = ["threads\nbefore", "threads\nafter"]
        sums = [
            summarize(retry_runs, lambda r: r["retrying"]["threads_before"]),
            summarize(retry_runs, lambda r: r["retrying"]["threads_after"]),
        ]
        ax.bar(labels, [s.median or 0 for s in sums], color="#1f77b4")
        ax.set_title(f"threads, {retry_runs[0]['retrying']['retrying']:,} jobs retrying")
        ax = rss_ax
        sums = [
            summarize(retry_runs, lambda r: r["retrying"]["rss_before_mb"]),
            summarize(retry_runs, lambda r: r["retrying"]["rss_after_mb"]),
        ]
        ax.bar(["RSS\nbefore", "RSS\nafter"], [s.median or 0 for s in sums], color="#1f77b4")
        ax.set_title(f"RSS, {retry_runs[0]['retrying']['retrying']:,} jobs retrying")
        ax.set_ylabel("MB")
    else:
        ax.text(0.5, 0.5, "not run", ha="center", transform=ax.transAxes)


def _scan(ax: Any, results: dict[str, Any]) -> None:
    scan_runs = ok_runs(results["scan"])
    if scan_runs:
        sums = [summarize(scan_runs, "mb_per_s"), summarize(scan_runs, "peak_rss_mb")]
        ax.bar(["MB/s", "peak RSS MB"], [s.median or 0 for s in sums], color="#1f77b4")
        ax.set_title(f"scan, {scan_runs[0]['layer_mb']:.0f} MB of layers")
    else:
        ax.text(0.5, 0.5, "not run", ha="center", transform=ax.transAxes)
