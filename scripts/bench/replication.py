#!/usr/bin/env python3
"""Replication benchmark: our replication through the whole engine against skopeo.

Starts a source registry (Debian's docker-registry) and pushes two image sets: one
3-layer 200 MB image (layers of 100, 60 and 40 MiB) and one repository of 10 tags
sharing a 32 MiB base (each tag adds a 2 MiB layer). Then, in alternating rounds:

- ours: ``JobService.replicate`` of the repository (one job), timed from the call to
  the job's end; one service for the whole run;
- ``skopeo copy`` of each tag;
- ``skopeo sync --src docker --dest docker`` of the 10-tag repository.

Every measurement copies into a freshly started, empty target registry (new storage
and port, started outside the timing), so neither side can mount blobs copied in an
earlier round. Prints each median, the ratio ours/skopeo, and the peak RSS of this
process (which runs the JobService) sampled while our replication of the 200 MB
image runs, for each round (one service for all rounds, so growth shows).

    .venv/bin/python scripts/bench/replication.py [--rounds 5] [--json FILE]

Goals: ratio <= 1.2 for the single image, <= 1.0 for the 10-tag repository; peak RSS
under 150 MB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loguru import logger

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from registries import ImageBuilder, RegistryServer, push_image

from actors import JobService
from model.db.tables import Project, ReplicationPolicy, ReplicationTarget
from model.settings import Settings
from model.status import Status

MiB = 1024 * 1024
#: Layer sizes of the single image, in MiB.
BIG_LAYERS_MIB = (100, 60, 40)
#: The shared base and the per-tag layer of the 10-tag repository, in MiB.
BASE_MIB, TAG_LAYER_MIB, TAGS = 32, 2, 10
BIG_REPO, MANY_REPO = "bench/big", "bench/app"
#: Seconds one replication may take before the benchmark gives up.
JOB_TIMEOUT_S = 600.0
#: Seconds between two RSS samples.
RSS_SAMPLE_S = 0.005


def rss_mb() -> float:
    """This process's resident set size now, in MiB (``VmRSS``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    """Samples this process's RSS in a thread while in a ``with`` block; ``peak_mb``."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            self.peak_mb = max(self.peak_mb, rss_mb())
            if self._stop.wait(RSS_SAMPLE_S):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mb())


@contextmanager
def fresh_registry(root: Path, name: str) -> Iterator[RegistryServer]:
    """An empty registry with its own storage and port, stopped afterwards."""
    server = RegistryServer(root / name)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def skopeo(*args: str) -> None:
    subprocess.run(
        ["skopeo", "--insecure-policy", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def skopeo_copy(source: RegistryServer, target: RegistryServer, repo: str, tags: list[str]) -> None:
    for tag in tags:
        skopeo(
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{source.host}/{repo}:{tag}",
            f"docker://{target.host}/{repo}:{tag}",
        )


def skopeo_sync(source: RegistryServer, target: RegistryServer, repo: str) -> None:
    skopeo(
        "sync",
        "--src",
        "docker",
        "--dest",
        "docker",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        f"{source.host}/{repo}",
        f"{target.host}/{repo.rsplit('/', 1)[0]}",
    )


class Ours:
    """Replication through one running JobService; a policy per target registry."""

    def __init__(self, service: JobService) -> None:
        self.service = service
        self.project = service.store.add(Project(name="bench"))
        self.targets = 0

    def replicate(self, target: RegistryServer, repo: str) -> None:
        store = self.service.store
        self.targets += 1
        row = store.add(ReplicationTarget(name=f"bench-{self.targets}", url=target.url))
        assert row.id is not None and self.project.id is not None
        policy = store.add(
            ReplicationPolicy(project_id=self.project.id, target_id=row.id, name="bench")
        )
        assert policy.id is not None
        (job_id,) = self.service.replicate(policy.id, repo)
        status = self.service.wait("replication", job_id, JOB_TIMEOUT_S)
        if status != Status.FINISHED:
            raise SystemExit(f"replication job {job_id} ended {status}")


def timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def build_images(root: Path, source: RegistryServer) -> list[str]:
    """Pushes both image sets to ``source``; returns the 10 tags of the repository."""
    images = ImageBuilder(root / "images", seed=1)
    big = images.docker_image(
        [images.random_layer(n * MiB, compresslevel=0) for n in BIG_LAYERS_MIB]
    )
    push_image(images, big, source.host, BIG_REPO, "v1")
    base = images.random_layer(BASE_MIB * MiB, compresslevel=0)
    tags = [f"t{n}" for n in range(TAGS)]
    for tag in tags:
        image = images.docker_image(
            [base, images.random_layer(TAG_LAYER_MIB * MiB, compresslevel=0)]
        )
        push_image(images, image, source.host, MANY_REPO, tag)
    return tags


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    logger.remove()

    with tempfile.TemporaryDirectory(prefix="bench-replication-") as tmp:
        times, peak_rss, rss_idle = _measure(Path(tmp), args.rounds)
    numbers = _summary(times, args.rounds, rss_idle, peak_rss)
    _print(numbers)
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2))


def _measure(root: Path, rounds: int) -> tuple[dict[str, list[float]], list[float], float]:
    """Seconds of each way of copying, by round (the order alternating), the peak RSS
    while ours copies the large image, by round, and the service's idle RSS."""
    times: dict[str, list[float]] = {
        "ours_image": [],
        "skopeo_copy_image": [],
        "ours_repository": [],
        "skopeo_copy_repository": [],
        "skopeo_sync_repository": [],
    }
    peak_rss: list[float] = []
    with fresh_registry(root, "source") as source:
        print("building and pushing images …", flush=True)
        tags = build_images(root, source)
        settings = Settings(
            database_url=f"sqlite:///{root}/bench.db",
            log_dir=root / "logs",
            key_path=root / "key",
            registry_url=source.url,
        )
        with JobService(settings) as service:
            ours = Ours(service)
            rss_idle = rss_mb()
            runs: list[tuple[str, Callable[[RegistryServer], None]]] = [
                ("ours_image", lambda t: ours.replicate(t, BIG_REPO)),
                ("skopeo_copy_image", lambda t: skopeo_copy(source, t, BIG_REPO, ["v1"])),
                ("ours_repository", lambda t: ours.replicate(t, MANY_REPO)),
                ("skopeo_copy_repository", lambda t: skopeo_copy(source, t, MANY_REPO, tags)),
                ("skopeo_sync_repository", lambda t: skopeo_sync(source, t, MANY_REPO)),
            ]
            for round_no in range(rounds):
                # Alternate the order so that neither side always runs first.
                order = runs if round_no % 2 == 0 else list(reversed(runs))
                for name, run in order:
                    target_name = f"target-{round_no}-{name}"
                    with fresh_registry(root, target_name) as target:
                        if name == "ours_image":
                            with RssSampler() as sampler:
                                seconds = timed(lambda r=run, t=target: r(t))  # type: ignore[misc]
                            peak_rss.append(sampler.peak_mb)
                        else:
                            seconds = timed(lambda r=run, t=target: r(t))  # type: ignore[misc]
                    times[name].append(seconds)
                print(
                    f"round {round_no + 1}: "
                    + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
                    + f"; peak RSS {peak_rss[-1]:.1f} MB",
                    flush=True,
                )
    return times, peak_rss, rss_idle


def _summary(
    times: dict[str, list[float]], rounds: int, rss_idle: float, peak_rss: list[float]
) -> dict[str, Any]:
    med = {name: statistics.median(values) for name, values in times.items()}
    return {
        "rounds": rounds,
        "seconds": times,
        "median_s": med,
        "ratio_image": med["ours_image"] / med["skopeo_copy_image"],
        "ratio_repository_sync": med["ours_repository"] / med["skopeo_sync_repository"],
        "ratio_repository_copy": med["ours_repository"] / med["skopeo_copy_repository"],
        "rss_idle_mb": rss_idle,
        "rss_peak_mb_by_round": peak_rss,
    }


def _print(numbers: dict[str, Any]) -> None:
    med, rounds, peak_rss = numbers["median_s"], numbers["rounds"], numbers["rss_peak_mb_by_round"]
    print()
    print(f"single image ({sum(BIG_LAYERS_MIB)} MiB, 3 layers), median of {rounds}:")
    print(f"  ours          {med['ours_image']:.3f} s")
    print(f"  skopeo copy   {med['skopeo_copy_image']:.3f} s")
    print(f"  ratio ours/skopeo {numbers['ratio_image']:.2f}  [goal <= 1.2]")
    print(f"repository of {TAGS} tags sharing a {BASE_MIB} MiB base, median of {rounds}:")
    print(f"  ours                 {med['ours_repository']:.3f} s")
    print(f"  skopeo sync          {med['skopeo_sync_repository']:.3f} s")
    print(f"  skopeo copy per tag  {med['skopeo_copy_repository']:.3f} s")
    print(f"  ratio ours/skopeo sync {numbers['ratio_repository_sync']:.2f}  [goal <= 1.0]")
    print(f"  ratio ours/skopeo copy {numbers['ratio_repository_copy']:.2f}")
    idle = numbers["rss_idle_mb"]
    print(f"RSS of the service process: idle {idle:.1f} MB; peak while copying the")
    print(f"  200 MB image: first round {peak_rss[0]:.1f} MB, highest {max(peak_rss):.1f} MB")
    print("  by round: " + ", ".join(f"{mb:.1f}" for mb in peak_rss) + " MB")
    print("  [goal < 150 MB]")


if __name__ == "__main__":
    main()
