"""Benchmark: stream image layers through ``model.scan.builtin.packages.scan_layer``.

Builds, in a temporary directory, 5 gzip layers totalling about 300 MB (``--mb``) of
realistic content: mostly incompressible file data in files of mixed sizes, some text,
directories, symlinks, this machine's ``/var/lib/dpkg/status`` (or a generated one),
``os-release``, Python ``dist-info`` metadata and whiteouts. Then scans them in a fresh
child process (so its peak RSS is the scan's alone) and prints seconds, MB/s of layer
data (compressed, as pulled from a registry) and of tar data, and peak RSS; for
comparison it times ``zcat`` over the same layers and a bare ``zlib`` inflate loop.

Usage: ``.venv/bin/python scripts/bench/scan_layers.py [--mb 300] [--layers 5] [--profile]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["build_layers", "main", "scan"]

_WORDS = (
    b"the quick brown fox jumps over lazy dog lorem ipsum dolor sit amet consectetur "
    b"import return def class self none true false if else for while in not and or "
).split()


def _status_file() -> bytes:
    mine = Path("/var/lib/dpkg/status")
    if mine.is_file():
        return mine.read_bytes()
    paras = [
        f"Package: pkg{i}\nStatus: install ok installed\nVersion: 1.{i}-1\n"
        f"Source: src{i % 50} (1.{i}-1)\nDescription: package {i}\n"
        for i in range(500)
    ]
    return "\n".join(paras).encode()


def _text(rng: random.Random, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choices(_WORDS, k=64)) + b"\n"
    return bytes(out[:size])


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_700_000_000
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def build_layers(folder: Path, total_mb: int, layers: int, seed: int = 1) -> list[Path]:
    """Write ``layers`` gzip layers of about ``total_mb`` MB (uncompressed) in all."""
    rng = random.Random(seed)
    per_layer = total_mb * 1_000_000 // layers
    paths: list[Path] = []
    status = _status_file()
    for index in range(layers):
        path = folder / f"layer{index}.tar.gz"
        with tarfile.open(path, "w:gz", compresslevel=6) as tar:
            written = 0
            if index == 0:
                _add_dir(tar, "etc")
                _add(tar, "etc/os-release", b'ID=debian\nVERSION_ID="12"\n')
                _add_dir(tar, "var/lib/dpkg")
                _add(tar, "var/lib/dpkg/status", status)
            if index == 2:
                for n in range(40):
                    base = f"usr/lib/python3/site-packages/dist{n}-1.{n}.dist-info"
                    _add_dir(tar, base)
                    meta = f"Metadata-Version: 2.1\nName: dist{n}\nVersion: 1.{n}\n\n"
                    _add(tar, f"{base}/METADATA", meta.encode() + _text(rng, 20_000))
            if index == 3:
                _add(tar, "usr/lib/python3/site-packages/.wh.dist0-1.0.dist-info", b"")
            directory = 0
            while written < per_layer:
                if rng.random() < 0.05:
                    directory += 1
                    _add_dir(tar, f"opt/app{index}/d{directory}")
                roll = rng.random()  # mean file ~30 KB, as in a typical distro image
                if roll < 0.93:
                    size = int(rng.lognormvariate(8.3, 1.6))  # median ~4 KB
                elif roll < 0.999:
                    size = rng.randint(16_000, 256_000)
                else:
                    size = rng.randint(2_000_000, 16_000_000)
                size = min(size, per_layer - written + 512)
                name = f"opt/app{index}/d{directory}/f{written}"
                if rng.random() < 0.1:
                    _add(tar, name + ".txt", _text(rng, min(size, 200_000)))
                    written += min(size, 200_000)
                else:
                    _add(tar, name + ".bin", os.urandom(size))
                    written += size
                if rng.random() < 0.02:
                    link = tarfile.TarInfo(name + ".lnk")
                    link.type = tarfile.SYMTYPE
                    link.linkname = name.rsplit("/", 1)[1] + ".bin"
                    tar.addfile(link)
        paths.append(path)
    return paths


def scan(paths: list[Path], profile: bool = False) -> dict[str, float]:
    """Scan the layers in this process; timings and peak RSS as a dict."""
    from model.scan.builtin.packages import merge_layers, scan_layer

    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    start, cpu = time.perf_counter(), time.process_time()
    results = []
    for path in paths:
        with path.open("rb") as blob:
            results.append(scan_layer(blob, path.name))
    packages = merge_layers(results)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if profiler is not None:
        import pstats

        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(20)
    maxrss, hwm = _peak_rss_mb()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "packages": len(packages),
        "maxrss_mb": maxrss,
        "hwm_mb": hwm,
    }


def _inflate_floor(paths: list[Path]) -> float:
    """CPU seconds for a bare zlib inflate of the layers, output discarded."""
    start = time.process_time()
    for path in paths:
        inflate = zlib.decompressobj(wbits=31)
        with path.open("rb") as blob:
            while chunk := blob.read(256 << 10):  # as scan_layer feeds zlib
                data = chunk
                while data:
                    inflate.decompress(data, 1 << 20)
                    data = inflate.unconsumed_tail
    return time.process_time() - start


def _tar_bytes(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        with path.open("rb") as blob:
            blob.seek(-4, os.SEEK_END)
            total += int.from_bytes(blob.read(4), "little")  # gzip ISIZE (< 4 GiB)
    return total


def _peak_rss_mb() -> tuple[float, float]:
    """(ru_maxrss, VmHWM) of this process in MB; VmHWM is 0 where /proc lacks it."""
    hwm = 0.0
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, hwm


def main() -> None:
    """Build the layers, scan them in a child process, print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=300, help="total uncompressed MB")
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile the scan")
    parser.add_argument("--scan", nargs="+", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scan:
        print(json.dumps(scan(args.scan, args.profile)))
        return
    if args.build:
        print(json.dumps([str(p) for p in build_layers(args.build, args.mb, args.layers)]))
        return
    # Building and scanning each run in a child process: on Linux a child's ru_maxrss
    # starts from its parent's RSS at spawn time, so this process must stay small.
    with tempfile.TemporaryDirectory(prefix="scan-bench-") as tmp:
        t0 = time.perf_counter()
        build = [sys.executable, __file__, "--build", tmp, "--mb", str(args.mb)]
        build += ["--layers", str(args.layers)]
        out = subprocess.run(build, check=True, stdout=subprocess.PIPE, text=True)
        paths = [Path(p) for p in json.loads(out.stdout)]
        built = time.perf_counter() - t0
        layer_bytes = sum(p.stat().st_size for p in paths)
        tar_bytes = _tar_bytes(paths)
        print(
            f"built {len(paths)} layers in {built:.1f} s: {layer_bytes / 1e6:.1f} MB gzip, "
            f"{tar_bytes / 1e6:.1f} MB tar"
        )
        cmd = [sys.executable, __file__, "--scan", *map(str, paths)]
        if args.profile:
            cmd.append("--profile")
        # stdout carries the result; stderr (the profile, if any) passes through
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        seconds = result["seconds"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(os.devnull, "wb") as null:
            subprocess.run(["zcat", *map(str, paths)], check=True, stdout=null)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        zcat = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        inflate = _inflate_floor(paths)
        mb = layer_bytes / 1e6
        cpu = result["cpu_seconds"]
        print(
            f"scan_layer: {seconds:.2f} s wall, {cpu:.2f} s CPU -> {mb / seconds:.0f} MB/s wall, "
            f"{mb / cpu:.0f} MB/s per core of layer data ({tar_bytes / 1e6 / cpu:.0f} MB/s of "
            f"tar); {result['packages']} packages; peak RSS {result['maxrss_mb']:.0f} MB "
            f"(ru_maxrss; VmHWM {result['hwm_mb']:.0f} MB)"
        )
        print(f"zcat:       {zcat:.2f} s CPU -> {mb / zcat:.0f} MB/s per core of layer data")
        print(f"zlib loop:  {inflate:.2f} s CPU -> {mb / inflate:.0f} MB/s per core of layer data")


if __name__ == "__main__":
    main()
