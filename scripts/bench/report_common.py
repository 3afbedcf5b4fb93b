"""What the report's parts share: the systems' labels, the goals, and the summaries of
runs (median, minimum, maximum)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

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
#: Goal of one node on PostgreSQL (``nodes.py``), jobs submitted one at a time.
GOAL_NODE_JOBS_PER_S = 1500.0
#: Goals of the paced benchmark (issue 16), milliseconds, on ours (SQLite).
GOAL_PACED_P99_MS = 5.0
GOAL_PACED_MAX_MS = 20.0
#: Throughput one submit at a time over the fastest peer's (issue 16).
GOAL_PEER_RATIO = 3.0
#: Replication against skopeo (issue 16): one image over ``skopeo copy``, the 10-tag
#: repository over ``skopeo sync``, the peak RSS of the process running the service.
GOAL_COPY_RATIO = 1.0
GOAL_SYNC_RATIO = 0.8
GOAL_REPLICATION_RSS_MB = 150.0


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


def ok_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if "error" not in r]


def errors_of(runs: list[dict[str, Any]]) -> list[str]:
    return [r["error"] for r in runs if "error" in r]


def summarize(runs: list[dict[str, Any]], key: str | Callable[[dict[str, Any]], float]) -> Summary:
    get = key if callable(key) else (lambda r: r[key])
    return Summary([get(r) for r in ok_runs(runs)])


def met(ok: bool | None) -> str:
    return "—" if ok is None else ("**met**" if ok else "**not met**")


def finishes_everything(runs: list[dict[str, Any]]) -> bool | None:
    ok = ok_runs(runs)
    if not ok:
        return None
    return all(r["finished"] == r["jobs"] and r["lost"] == 0 for r in ok) and len(ok) == len(runs)


def stop_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    stop = results.get("stop")
    return [] if not stop or "error" in stop else list(stop["runs"])
