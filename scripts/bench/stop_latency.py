#!/usr/bin/env python3
"""Stop latency: the time from ``JobService.stop()`` to the job's ``stopped`` status
while a replication job copies a 200 MB blob.

Starts two local registries (Debian's ``docker-registry``): the source, the service's
``registry_url``, holding one image with one 200 MiB layer (random bytes, gzip level
0), and a target with htpasswd auth (its password stored encrypted with
``service.box.encrypt``, as the API stores it). One ``JobService`` (SQLite) runs the
whole benchmark. Each stop: queue a replication of the image, wait until the job's log
says the blob is being sent, wait a random 0-300 ms more (seeded) so the stop lands
anywhere within an 8 MiB step, then time ``stop("replication", id)`` until
``wait()`` returns ``stopped`` (it returns when the worker lets go of the job, after
the status is written). A stop that lands after the blob was sent, or that ends in
another status, fails the benchmark.

    .venv/bin/python scripts/bench/stop_latency.py [--stops 20] [--runs 1] [--json FILE]

Goal: p99 <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parents[1]
for extra in (ROOT, ROOT / "tests", BENCH):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import scratch  # noqa: E402
from loguru import logger  # noqa: E402
from registries import (  # noqa: E402
    ImageBuilder,
    RegistryServer,
    htpasswd_auth,
    push_image,
    wait_until,
)

from actors import JobService  # noqa: E402
from model.db.tables import Project, ReplicationPolicy, ReplicationTarget  # noqa: E402
from model.joblog import job_log_path  # noqa: E402
from model.settings import Settings  # noqa: E402
from model.status import Status  # noqa: E402

__all__ = ["main", "stop_once"]

MiB = 1024 * 1024
BLOB_MIB = 200
REPOSITORY, TAG = "bench/big", "v1"
USER, PASSWORD = "replicator", "replicator-secret-pw"
#: Seconds the job may take to start sending the blob, and to end after the stop.
JOB_TIMEOUT_S = 120.0
#: Largest extra wait after "sending" before the stop, in seconds.
MAX_DELAY_S = 0.3


def _log(service: JobService, job_id: int) -> str:
    path = Path(job_log_path(service.settings.log_dir, job_id))
    return path.read_text(errors="replace") if path.exists() else ""


def add_policy(service: JobService, target: RegistryServer) -> int:
    store = service.store
    project = store.add(Project(name="bench"))
    row = store.add(
        ReplicationTarget(
            name="bench-target",
            url=target.url,
            username=USER,
            password=service.box.encrypt(PASSWORD),
        )
    )
    assert project.id is not None and row.id is not None
    policy = store.add(ReplicationPolicy(project_id=project.id, target_id=row.id, name="bench"))
    assert policy.id is not None
    return policy.id


def stop_once(service: JobService, policy: int, sending: str, delay_s: float) -> dict[str, Any]:
    """One replication stopped while it sends the blob; the seconds the stop took."""
    (job_id,) = service.replicate(policy, REPOSITORY, [TAG])
    wait_until(
        lambda: sending in _log(service, job_id), timeout_s=JOB_TIMEOUT_S, what="blob sending"
    )
    time.sleep(delay_s)  # lands the stop at a random point of a step (not a wait for state)
    started = time.perf_counter()
    service.stop("replication", job_id)
    status = service.wait("replication", job_id, JOB_TIMEOUT_S)
    seconds = time.perf_counter() - started
    if status != Status.STOPPED:
        raise SystemExit(f"job {job_id} ended {status}, not stopped:\n{_log(service, job_id)}")
    return {"job_id": job_id, "delay_s": round(delay_s, 3), "seconds": seconds}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stops", type=int, default=20, help="stops per run")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    logger.remove()
    rng = random.Random(args.seed)
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-stop-", dir=args.work))
    runs: list[dict[str, Any]] = []
    try:
        source = RegistryServer(root / "source")
        target = RegistryServer(
            root / "target", auth=htpasswd_auth(root / "target-auth", {USER: PASSWORD})
        )
        with source, target:
            images = ImageBuilder(root / "images", seed=args.seed)
            layer = images.random_layer(BLOB_MIB * MiB, compresslevel=0)
            push_image(images, images.docker_image([layer]), source.host, REPOSITORY, TAG)
            print(f"pushed {REPOSITORY}:{TAG}, one layer of {layer.size / 1e6:.1f} MB", flush=True)
            sending = f"blob {layer.digest} ({layer.size} bytes): sending"
            settings = Settings(
                database_url=f"sqlite:///{root}/bench.db",
                log_dir=root / "logs",
                key_path=root / "key",
                registry_url=source.url,
            )
            with JobService(settings) as service:
                policy = add_policy(service, target)
                for run_no in range(args.runs):
                    stops = [
                        stop_once(service, policy, sending, rng.uniform(0, MAX_DELAY_S))
                        for _ in range(args.stops)
                    ]
                    seconds = [s["seconds"] for s in stops]
                    run = {
                        "stops": len(stops),
                        "p50_s": round(statistics.median(seconds), 4),
                        "p99_s": round(_percentile(seconds, 0.99), 4),
                        "max_s": round(max(seconds), 4),
                        "seconds": [round(s, 4) for s in seconds],
                    }
                    runs.append(run)
                    print(
                        f"run {run_no + 1}: {run['stops']} stops during a {BLOB_MIB} MiB blob: "
                        f"p50 {run['p50_s'] * 1000:.0f} ms, p99 {run['p99_s'] * 1000:.0f} ms"
                        "  [goal p99 <= 1 s]",
                        flush=True,
                    )
    finally:
        scratch.remove(root)
    if args.json:
        args.json.write_text(json.dumps({"blob_mib": BLOB_MIB, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
