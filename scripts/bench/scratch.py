"""Scratch folders for the benchmarks, and what creating a file costs in them.

Every job of ours creates its log file, so a benchmark of ours measures the file
system's inode allocation too. On ext4 without a journal (this machine's root file
system: ``/proc/fs/jbd2`` lists nothing for it), allocating an inode skips every
inode of the block group freed in the last 60 s, or 360 s while the inode table's
block waits for write-back, and reads each one's table entry to find that out. Right
after a run removed its 10,000 job logs, creating a file costs 150 to 800 µs of kernel
time instead of 10 to 20 µs, and the next run pays it on every job.

So a benchmark makes its folders with :func:`folder`, which leaves them in place when
``JOBSERVICE_BENCH_KEEP`` is set (the suite sets it and removes its work folder once,
at the end), and reports :func:`file_create_us` measured where its logs go just
before it starts: a reader can tell a quiet file system from a busy one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["KEEP_ENV", "file_create_us", "file_system", "folder", "keep", "remove"]

#: Set (to anything but empty) to leave scratch folders in place.
KEEP_ENV = "JOBSERVICE_BENCH_KEEP"


def keep() -> bool:
    """Whether scratch folders stay after their benchmark."""
    return bool(os.environ.get(KEEP_ENV))


def remove(path: Path) -> None:
    """Removes ``path`` unless scratch folders are kept."""
    if not keep():
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def folder(prefix: str, parent: str | Path | None = None) -> Iterator[Path]:
    """A new folder under ``parent`` (default ``TMPDIR``), removed at the end unless kept."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        remove(path)


def file_system(folder: Path) -> str:
    """The type of the file system holding ``folder`` (the longest mount point above it)."""
    best, kind = "", "?"
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _device, mount_point, fs_type = line.split()[:3]
            inside = str(folder).startswith(mount_point.rstrip("/") + "/")
            if (inside or str(folder) == mount_point) and len(mount_point) > len(best):
                best, kind = mount_point, fs_type
    return kind


def file_create_us(where: Path, files: int = 200) -> float:
    """Microseconds to create and write one small file in ``where`` now, as a job's
    log is written (the files stay: removing them would slow the run that follows)."""
    where.mkdir(parents=True, exist_ok=True)
    probe = Path(tempfile.mkdtemp(prefix=".create-probe-", dir=where))
    started = time.perf_counter()
    for n in range(files):
        fd = os.open(probe / f"job_{n}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, b"2026-01-01T00:00:00.000+00:00 [INFO] state running (from pending)\n")
        os.close(fd)
    return round((time.perf_counter() - started) / files * 1e6, 1)
