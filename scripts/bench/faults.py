#!/usr/bin/env python3
"""Fault benchmark: a 200 MB image replicated through the whole engine while both
registries sit behind a fault proxy (``tests/faultproxy.py``) that answers 5 % of the
exchanges 500 and resets the connection of 2 % at a random point of their body.

Starts a source and a target registry (Debian's docker-registry), pushes one 3-layer
image (layers of 100, 60 and 40 MiB) to the source, puts a proxy in front of each,
and runs one ``JobService.replicate`` of the repository. Prints whether the job
finished, whether the manifest digests are equal (``skopeo inspect --raw`` on both
registries, not through the proxies), the bytes the source's proxy sent and the
target's proxy received relative to the image's size, each fault the proxies applied
(also in ``--json``), and the time.

    .venv/bin/python scripts/bench/faults.py [--errors 0.05] [--drops 0.02] [--seed 1]

Goal: finished, equal digests, at most 1.3x the image's bytes on either side.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loguru import logger

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from faultproxy import FaultProxy
from registries import ImageBuilder, RegistryServer, push_image, skopeo_digest

from actors import JobService
from model.db.tables import Project, ReplicationPolicy, ReplicationTarget
from model.joblog import job_log_path
from model.settings import Settings
from model.status import Status

MiB = 1024 * 1024
#: Layer sizes of the image, in MiB.
LAYERS_MIB = (100, 60, 40)
REPOSITORY = "bench/big"
#: Seconds the replication may take before the benchmark gives up.
JOB_TIMEOUT_S = 900.0
#: Goal: bytes on either side relative to the image's.
GOAL_RATIO = 1.3


def main() -> None:
    args = _arguments()
    logger.remove()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        run = _replicate_through_faults(Path(tmp), args)
    _print(run, args)
    if args.json:
        numbers = {k: v for k, v in run.items() if k not in ("job_id", "log")}  # printed only
        args.json.write_text(json.dumps(numbers, indent=2))
    if run["status"] != Status.FINISHED.value or not run["digests_equal"]:
        raise SystemExit(1)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--errors", type=float, default=0.05, help="share of answers 500")
    parser.add_argument("--drops", type=float, default=0.02, help="share of exchanges reset")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-retries", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    return parser.parse_args()


def _replicate_through_faults(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Pushes the image, replicates it with a fault proxy in front of each registry and
    returns what happened (the job's log under ``log``)."""
    source, target = RegistryServer(root / "source"), RegistryServer(root / "target")
    source.start()
    target.start()
    try:
        print("building and pushing the image …", flush=True)
        images = ImageBuilder(root / "images", seed=1)
        image = images.docker_image(
            [images.random_layer(n * MiB, compresslevel=0) for n in LAYERS_MIB]
        )
        push_image(images, image, source.host, REPOSITORY, "v1")
        size = sum(blob.size for blob in image.all_blobs()) + len(image.manifest)
        with FaultProxy(source.host) as source_proxy, FaultProxy(target.host) as target_proxy:
            source_proxy.randomly(args.errors, args.drops, seed=args.seed)
            target_proxy.randomly(args.errors, args.drops, seed=args.seed + 1)
            status, job_id, seconds, log = _replicate(
                root, args, source_proxy.url, target_proxy.url
            )
            sent = source_proxy.bytes_to_clients
            received = target_proxy.bytes_from_clients
            fired_lines = (source_proxy.fired, target_proxy.fired)
            exchanges = (source_proxy.exchanges, target_proxy.exchanges)
        equal = status == Status.FINISHED.value and skopeo_digest(
            target.host, REPOSITORY, "v1"
        ) == skopeo_digest(source.host, REPOSITORY, "v1")
    finally:
        target.stop()
        source.stop()
    return {
        "status": status,
        "job_id": job_id,
        "digests_equal": equal,
        "seconds": seconds,
        "image_bytes": size,
        "source_sent_bytes": sent,
        "target_received_bytes": received,
        "source_ratio": sent / size,
        "target_ratio": received / size,
        "faults_fired": (len(fired_lines[0]), len(fired_lines[1])),
        "fault_lines": {"source": fired_lines[0], "target": fired_lines[1]},
        "exchanges": exchanges,
        "job_retries": len(re.findall(r"state retrying", log)),
        "log": log,
    }


def _replicate(
    root: Path, args: argparse.Namespace, source_url: str, target_url: str
) -> tuple[str, int, float, str]:
    """One replication of the image from ``source_url`` to ``target_url``: its end
    status, its job id, its seconds and its log."""
    settings = Settings(
        database_url=f"sqlite:///{root}/bench.db",
        log_dir=root / "logs",
        key_path=root / "key",
        registry_url=source_url,
        retry_delay=1.0,
        retry_delay_max=5.0,
        max_retries=args.max_retries,
    )
    with JobService(settings) as service:
        store = service.store
        project = store.add(Project(name="bench"))
        row = store.add(ReplicationTarget(name="bench", url=target_url))
        assert project.id is not None and row.id is not None
        policy = store.add(ReplicationPolicy(project_id=project.id, target_id=row.id, name="bench"))
        assert policy.id is not None
        started = time.perf_counter()
        (job_id,) = service.replicate(policy.id, REPOSITORY, ("v1",))
        status = service.wait("replication", job_id, JOB_TIMEOUT_S)
        seconds = time.perf_counter() - started
        log = Path(job_log_path(settings.log_dir, job_id)).read_text()
    return str(Status(status).value), job_id, seconds, log


def _print(run: dict[str, Any], args: argparse.Namespace) -> None:
    size, fired, exchanges = run["image_bytes"], run["faults_fired"], run["exchanges"]
    sent, received = run["source_sent_bytes"], run["target_received_bytes"]
    print()
    print(
        f"image {size / MiB:.1f} MiB ({len(LAYERS_MIB)} layers); faults on both registries: "
        f"{args.errors:.0%} answers 500, {args.drops:.0%} exchanges reset (seed {args.seed})"
    )
    print(
        f"  job {run['job_id']}: {run['status']} in {run['seconds']:.2f} s, "
        f"{run['job_retries']} job retry(ies)"
    )
    print(f"  digests equal: {run['digests_equal']}")
    print(
        f"  faults applied: source {fired[0]} of {exchanges[0]} exchanges, "
        f"target {fired[1]} of {exchanges[1]}"
    )
    for line in re.findall(r"sent \([0-9.]+ s\) after faults: ([^\n]*)", run["log"]):
        print(f"  blob faults: {line}")
    for side, lines in run["fault_lines"].items():
        for line in lines:
            print(f"  {side} fault: {_short(line)}")
    print(f"  source proxy sent     {sent / size:.3f}x the image ({sent} bytes)")
    print(f"  target proxy received {received / size:.3f}x the image ({received} bytes)")
    print(f"  [goal: finished, equal digests, <= {GOAL_RATIO}x on each side]")


def _short(line: str) -> str:
    """A fault line of the proxy with the upload session's ``_state`` left out."""
    return re.sub(r"_state=[^&\s:]*&?", "", line)


if __name__ == "__main__":
    main()
