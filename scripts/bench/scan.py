#!/usr/bin/env python3
"""Scan benchmark: one image of 5 layers, about 300 MB of layer data, scanned with the
builtin backend through the whole engine (JobService, a scan worker, the state machine,
the registry client, the job log, the database).

Builds the layers (``scan_layers.build_layers``: mixed file sizes, mostly incompressible,
this machine's dpkg database, Python metadata, whiteouts) in a child process, pushes the
image with skopeo to a local ``docker-registry`` it starts, writes a small OSV database
that matches some of the image's packages, then runs the scan in a fresh child process
pinned to one CPU (the registry gets another) and prints seconds, MB/s of layer data
(compressed, as pulled) and the scanning process's peak RSS.

Goal: >= 100 MB/s on one core, peak RSS < 200 MB.

    .venv/bin/python scripts/bench/scan.py [--mb 325] [--layers 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1].parent
for extra in (ROOT, ROOT / "tests", ROOT / "scripts" / "bench"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

__all__ = ["main"]

_REPOSITORY = "bench/scan"
_TAG = "v1"


def _peak_rss_mb() -> tuple[float, float]:
    """(ru_maxrss, VmHWM) of this process in MB."""
    hwm = 0.0
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, hwm


def _pin(pid: int, cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, {cpu})


# -- the scanning process ------------------------------------------------------------


def scan_child(args: argparse.Namespace) -> dict[str, Any]:
    """Runs in the child: a JobService scans the image once; returns the numbers."""
    _pin(0, args.cpu)
    from loguru import logger

    from actors import JobService
    from model.db.tables import ImgScanOverview, ScanFinding
    from model.settings import Settings

    logger.remove()
    work = Path(args.workdir)
    settings = Settings(
        database_url=f"sqlite:///{work}/bench.db",
        log_dir=work / "logs",
        key_path=work / "key",
        registry_url=args.registry,
        vuln_db_path=Path(args.db),
        scan_workers=1,
    )
    with JobService(settings) as service:
        before_rss = _peak_rss_mb()[1]
        cpu0, t0 = time.process_time(), time.perf_counter()
        job_id = service.scan(_REPOSITORY, _TAG)
        status = service.wait("scan", job_id, 600)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        log = Path(service.log_path("scan", job_id)).read_text()
        (row,) = service.store.list_rows(ImgScanOverview) or [None]
        findings = len(service.store.list_rows(ScanFinding))
    maxrss, hwm = _peak_rss_mb()
    return {
        "status": status,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "maxrss_mb": maxrss,
        "hwm_mb": hwm,
        "rss_before_mb": before_rss,
        "components_overview": row.components_overview if row is not None else None,
        "severity": row.severity if row is not None else None,
        "findings": findings,
        "log": [line for line in log.splitlines() if "] state " not in line],
    }


# -- building and pushing ------------------------------------------------------------


def _file_digest(path: Path, *, gunzip: bool = False) -> str:
    digest = hashlib.sha256()
    opener = gzip.open if gunzip else open
    with opener(path, "rb") as blob:
        while chunk := blob.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _osv_db(folder: Path) -> None:
    """A few OSV records that match packages of this machine's dpkg database (if any)."""
    folder.mkdir(parents=True, exist_ok=True)
    status = Path("/var/lib/dpkg/status")
    names: list[str] = []
    if status.exists():
        for line in status.read_text(errors="replace").splitlines():
            if line.startswith("Package: "):
                names.append(line.split(": ", 1)[1])
    names = names[:20] or [f"pkg{i}" for i in range(20)]
    for i, name in enumerate(names):
        record = {
            "id": f"BENCH-{i:04d}",
            "summary": f"benchmark record for {name}",
            "affected": [
                {
                    "package": {"ecosystem": "Debian", "name": name},
                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}],
                    "ecosystem_specific": {"urgency": ["low", "medium", "high"][i % 3]},
                }
            ],
        }
        (folder / f"BENCH-{i:04d}.json").write_text(json.dumps(record))
    for i in range(2000):  # bulk: records for packages the image does not have
        record = {
            "id": f"BENCH-X{i:05d}",
            "affected": [
                {
                    "package": {"ecosystem": "PyPI", "name": f"absent-{i}"},
                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}],
                }
            ],
        }
        (folder / f"BENCH-X{i:05d}.json").write_text(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=325, help="total uncompressed MB")
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--scan-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--registry", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scan_child:
        print(json.dumps(scan_child(args)))
        return

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    scan_cpu = cpus[-1] if len(cpus) > 1 else None
    with tempfile.TemporaryDirectory(prefix="scan-bench-") as tmp:
        result, layers, layer_bytes = _build_push_and_scan(Path(tmp), args, cpus, scan_cpu)
    if result["status"] != "finished":
        raise SystemExit(f"scan ended {result['status']}: {result['log']}")
    summary = _summary(result, layers, layer_bytes, scan_cpu)
    _print(result, summary, scan_cpu)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


def _build_push_and_scan(
    work: Path, args: argparse.Namespace, cpus: list[int], scan_cpu: int | None
) -> tuple[dict[str, Any], int, int]:
    """Builds the image's layers, pushes them to a registry of its own and scans the
    image in a child process (on one core when there are two): the child's result,
    the number of layers and their gzip bytes."""
    from registries import Blob, ImageBuilder, RegistryServer, push_image

    t0 = time.perf_counter()
    build = [
        sys.executable,
        str(ROOT / "scripts" / "bench" / "scan_layers.py"),
        "--build",
        str(work / "layers"),
        "--mb",
        str(args.mb),
        "--layers",
        str(args.layers),
    ]
    (work / "layers").mkdir()
    out = subprocess.run(build, check=True, stdout=subprocess.PIPE, text=True)
    paths = [Path(p) for p in json.loads(out.stdout)]
    builder = ImageBuilder(work / "images")
    blobs = []
    for path in paths:
        digest = _file_digest(path)
        target = builder.blob_dir / digest.split(":", 1)[1]
        path.rename(target)
        diff_id = _file_digest(target, gunzip=True)
        blobs.append(Blob(target, digest, target.stat().st_size, diff_id))
    image = builder.docker_image(blobs)
    layer_bytes = sum(b.size for b in blobs)
    _osv_db(work / "osv")
    with RegistryServer(work / "registry") as registry:
        if registry._process is not None and len(cpus) > 1:
            _pin(registry._process.pid, cpus[0])
        push_image(builder, image, registry.host, _REPOSITORY, _TAG)
        built = time.perf_counter() - t0
        print(
            f"built and pushed {len(blobs)} layers, {layer_bytes / 1e6:.1f} MB "
            f"(gzip), in {built:.1f} s"
        )
        cmd = [
            sys.executable,
            __file__,
            "--scan-child",
            "--registry",
            registry.url,
            "--db",
            str(work / "osv"),
            "--workdir",
            str(work),
        ]
        if scan_cpu is not None:
            cmd += ["--cpu", str(scan_cpu)]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1]), len(blobs), layer_bytes


def _summary(
    result: dict[str, Any], layers: int, layer_bytes: int, scan_cpu: int | None
) -> dict[str, Any]:
    seconds, cpu = result["seconds"], result["cpu_seconds"]
    mb = layer_bytes / 1e6
    layer_seconds = None
    for line in result["log"]:
        found = re.search(r"totals: \d+ layer\(s\), [\d.]+ MB in ([\d.]+) s", line)
        if found:
            layer_seconds = float(found.group(1))
    return {
        "layers": layers,
        "layer_mb": round(mb, 1),
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "mb_per_s": round(mb / seconds, 1),
        "mb_per_cpu_s": round(mb / cpu, 1) if cpu else None,
        "layer_phase_seconds": layer_seconds,
        "layer_phase_mb_per_s": round(mb / layer_seconds, 1) if layer_seconds else None,
        "peak_rss_mb": round(result["hwm_mb"] or result["maxrss_mb"], 1),
        "rss_before_scan_mb": round(result["rss_before_mb"], 1),
        "one_cpu": scan_cpu is not None,
        "severity": result["severity"],
        "components_overview": result["components_overview"],
        "findings": result["findings"],
    }


def _print(result: dict[str, Any], summary: dict[str, Any], scan_cpu: int | None) -> None:
    seconds, cpu, mb = summary["seconds"], summary["cpu_seconds"], summary["layer_mb"]
    print(
        f"scan: {seconds:.2f} s wall, {cpu:.2f} s CPU -> {mb / seconds:.0f} MB/s of layer data"
        f"{' on one core' if scan_cpu is not None else ''}; peak RSS "
        f"{summary['peak_rss_mb']:.0f} MB (before the scan {summary['rss_before_scan_mb']:.0f} MB)"
    )
    print(
        f"result: severity {result['severity']}, {result['components_overview']}, "
        f"{result['findings']} findings"
    )
    print("the job's log:")
    for line in result["log"]:
        print("  " + line)


if __name__ == "__main__":
    main()
