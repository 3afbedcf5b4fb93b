"""CPU seconds of processes and threads, thread names, and PostgreSQL's processes, read
from ``/proc`` (Linux)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

__all__ = ["cpu_s", "postgres_pids", "postmaster_pid", "thread_cpu", "thread_names"]

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads); 0 once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid`` (by thread id)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(task.name)] = (int(fields[11]) + int(fields[12])) / _TICKS
    return found


def thread_names(pid: int) -> dict[int, str]:
    """Python's names of the threads of ``pid`` (``py-spy dump``, when on the PATH;
    CPython leaves the kernel's thread names alone)."""
    spy = shutil.which("py-spy")
    if spy is None:
        return {}
    try:
        out = subprocess.run(
            [spy, "dump", "-p", str(pid)], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {int(t): n for t, n in re.findall(r'Thread (\d+) \([^)]*\): "([^"]+)"', out.stdout)}


def postgres_pids(postmaster: int | None) -> list[int]:
    """The postmaster and every process it started (backends, writer, WAL writer…)."""
    if postmaster is None:
        return []
    found = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == postmaster:
            found.append(int(stat.parent.name))
    return found


def postmaster_pid(pg_dir: Path | None) -> int | None:
    if pg_dir is None:
        return None
    try:
        return int((pg_dir / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
