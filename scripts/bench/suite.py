#!/usr/bin/env python3
"""Runs every benchmark of ``scripts/bench/`` and writes the report.

Each measurement is a fresh child process (``peers.py`` throughput, paced and
durability, ``stop_latency.py``,
``engine.py``, ``scan.py``, ``nodes.py``, ``replication.py``), run ``--runs`` times; the systems of
the peer benchmarks take turns within each round, in an order that rotates from one
round to the next, so that drift in the machine's speed hits all of them alike. One
PostgreSQL cluster serves the whole suite (a new database per run); every peer run
starts its own Redis. Working files go under ``OUT/work`` (``TMPDIR`` points there
too, for the scripts that use temporary folders) and stay there until the suite ends
(``scratch.py`` says why), raw numbers to ``OUT/raw/``, each
child's output to ``OUT/logs/``; then :mod:`report` writes ``OUT/report.md`` and
``OUT/report.png``.

    .venv/bin/python scripts/bench/suite.py [--quick] [--runs 5] [--out bench-results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parents[1]
for extra in (ROOT, BENCH):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import psutil  # noqa: E402
import report  # noqa: E402
import scratch  # noqa: E402
from peers import SYSTEMS  # noqa: E402
from servers import postgres_cluster  # noqa: E402

__all__ = ["Plan", "main"]

#: Seconds one child benchmark may take before it is killed and marked failed.
CHILD_TIMEOUT_S = 1800.0
_PEER_PACKAGES = (
    "celery",
    "kombu",
    "redis",
    "rq",
    "dramatiq",
    "procrastinate",
    "huey",
    "psycopg",
)


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    runs: int
    jobs: int
    durability_jobs: int
    durability_sleep_s: float
    durability_kill_after: int
    durability_idle_s: float
    stops: int
    retrying: int
    scan_args: tuple[str, ...]
    replication_rounds: int  # 0: not run
    paced_jobs: int
    paced_rate: float  # submits per second

    @classmethod
    def full(cls, runs: int) -> Plan:
        return cls(runs, 10_000, 1_000, 0.05, 50, 10.0, 20, 10_000, (), runs, 1_000, 100.0)

    @classmethod
    def quick(cls) -> Plan:
        scan = ("--mb", "30", "--layers", "1")
        return cls(1, 300, 100, 0.02, 10, 1.5, 3, 1_000, scan, 0, 200, 100.0)


class Runner:
    """Runs child benchmarks, keeps their output and JSON."""

    def __init__(self, out: Path, env: dict[str, str]) -> None:
        self.out = out
        self.env = env
        self.raw = out / "raw"
        self.logs = out / "logs"
        for folder in (self.raw, self.logs):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)

    def run(self, name: str, command: list[str]) -> dict[str, Any]:
        """Runs ``command`` with ``--json RAW/name.json``; its result, or an ``error``."""
        target = self.raw / f"{name}.json"
        started = time.monotonic()
        print(f"  {name} …", end="", flush=True)
        with (self.logs / f"{name}.log").open("w") as log:
            try:
                done = subprocess.run(
                    [*command, "--json", str(target)],
                    cwd=ROOT,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=CHILD_TIMEOUT_S,
                    check=False,
                )
                code: int | str = done.returncode
            except subprocess.TimeoutExpired:
                code = f"timed out after {CHILD_TIMEOUT_S:.0f} s"
        seconds = time.monotonic() - started
        if code == 0 and target.exists():
            result: dict[str, Any] = json.loads(target.read_text())
            print(f" {seconds:.1f} s", flush=True)
        else:
            tail = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-5:]
            result = {"error": f"exit {code}: " + " | ".join(tail)}
            target.write_text(json.dumps(result, indent=2))
            print(f" FAILED ({code}), see {self.logs / (name + '.log')}", flush=True)
        return result


def _version(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "not found"


def machine() -> dict[str, Any]:
    """What the numbers ran on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages = {}
    for name in _PEER_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "not installed"
    pg_ctl = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
        "redis_server": _version(["redis-server", "--version"]),
        "postgresql": _version([str(pg_ctl[-1]) if pg_ctl else "pg_ctl", "--version"]),
        "skopeo": _version(["skopeo", "--version"]),
        "docker_registry": _version(["docker-registry", "--version"]),
    }


def _rotated(items: tuple[str, ...], round_no: int) -> list[str]:
    shift = round_no % len(items)
    order = list(items[shift:] + items[:shift])
    return order if round_no % 2 == 0 else order[::-1]


def run_suite(plan: Plan, out: Path, quick: bool) -> dict[str, Any]:
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    (work / "tmp").mkdir(parents=True)
    env = dict(os.environ)
    env["TMPDIR"] = str(work / "tmp")
    env[scratch.KEEP_ENV] = "1"  # one removal, at the end: see scratch.py
    # tests/postgres.py makes its folder with tempfile: under TMPDIR, like every child.
    os.environ["TMPDIR"] = env["TMPDIR"]
    runner = Runner(out, env)
    results = _empty_results(plan, quick)
    started = time.monotonic()
    with postgres_cluster() as cluster:
        for r in range(plan.runs):
            print(f"round {r + 1} of {plan.runs}", flush=True)
            _round(runner, plan, r, cluster, work, results)
    _once(runner, plan, work, results)
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    results["seconds"] = round(time.monotonic() - started, 1)
    shutil.rmtree(work, ignore_errors=True)
    return results


def _empty_results(plan: Plan, quick: bool) -> dict[str, Any]:
    return {
        "quick": quick,
        "plan": plan.__dict__,
        "machine": machine(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "throughput": {s: [] for s in SYSTEMS},
        "durability": {s: [] for s in SYSTEMS},
        "paced": {s: [] for s in SYSTEMS},
        "stop": None,
        "retries": [],
        "scan": [],
        "replication": None,
        "nodes": [],
        "load_samples": [],
    }


def _sample_load(results: dict[str, Any]) -> None:
    results["load_samples"].append(round(os.getloadavg()[0], 2))


def _round(
    runner: Runner, plan: Plan, r: int, cluster: Any, work: Path, results: dict[str, Any]
) -> None:
    """Round ``r``: every system's throughput, paced and durability runs (each in an
    order rotated by round), then the engine, scan and nodes benchmarks."""
    py = sys.executable
    common = ["--pg-port", str(cluster.port), "--pg-dir", str(cluster.folder)]
    common += ["--work", str(work)]
    peers = [py, str(BENCH / "peers.py")]
    durable = ["--jobs", str(plan.durability_jobs), "--sleep", str(plan.durability_sleep_s)]
    durable += ["--kill-after", str(plan.durability_kill_after)]
    durable += ["--idle", str(plan.durability_idle_s)]
    for system in _rotated(SYSTEMS, r):
        command = [*peers, "throughput", "--system", system, "--jobs", str(plan.jobs)]
        results["throughput"][system].append(
            runner.run(f"throughput-{system}-{r + 1}", [*command, *common])
        )
        _sample_load(results)
    for system in _rotated(SYSTEMS, r + 2):
        command = [*peers, "paced", "--system", system, "--jobs", str(plan.paced_jobs)]
        command += ["--rate", str(plan.paced_rate)]
        results["paced"][system].append(runner.run(f"paced-{system}-{r + 1}", [*command, *common]))
        _sample_load(results)
    for system in _rotated(SYSTEMS, r + 1):
        command = [*peers, "durability", "--system", system, *durable]
        results["durability"][system].append(
            runner.run(f"durability-{system}-{r + 1}", [*command, *common])
        )
        _sample_load(results)
    command = [py, str(BENCH / "engine.py"), "--jobs", str(plan.jobs), "--queued", "0"]
    results["retries"].append(
        runner.run(f"engine-{r + 1}", [*command, "--retrying", str(plan.retrying)])
    )
    results["scan"].append(
        runner.run(f"scan-{r + 1}", [py, str(BENCH / "scan.py"), *plan.scan_args])
    )
    command = [py, str(BENCH / "nodes.py"), "--jobs", str(plan.jobs)]
    command += ["--kill-jobs", str(plan.durability_jobs)]
    command += ["--pg-port", str(cluster.port), "--pg-dir", str(cluster.folder)]
    results["nodes"].append(runner.run(f"nodes-{r + 1}", command))
    _sample_load(results)


def _once(runner: Runner, plan: Plan, work: Path, results: dict[str, Any]) -> None:
    """The benchmarks with no peer to take turns with: stop latency (one process, one
    200 MB image, every run) and replication against skopeo."""
    py = sys.executable
    print("stop latency", flush=True)
    command = [py, str(BENCH / "stop_latency.py"), "--stops", str(plan.stops)]
    results["stop"] = runner.run("stop", [*command, "--runs", str(plan.runs), "--work", str(work)])
    _sample_load(results)
    if plan.replication_rounds:
        print("replication against skopeo", flush=True)
        results["replication"] = runner.run(
            "replication",
            [py, str(BENCH / "replication.py"), "--rounds", str(plan.replication_rounds)],
        )
        _sample_load(results)


def main(argv: list[str] | None = None, write: Callable[..., None] = report.write) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a reduced set, under 2 minutes")
    parser.add_argument("--runs", type=int, default=5, help="runs of each benchmark (full)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    combined = out / "results.json"
    if args.report_only:
        results = json.loads(combined.read_text())
    else:
        plan = Plan.quick() if args.quick else Plan.full(args.runs)
        results = run_suite(plan, out, args.quick)
        combined.write_text(json.dumps(results, indent=2))
    write(results, out)
    print(f"wrote {out / 'report.md'}, {out / 'report.png'} and {combined}")


if __name__ == "__main__":
    main()
