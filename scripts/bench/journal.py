"""The execution journal every benchmark job writes, whichever system runs it.

A job's body ends with :func:`record`: one fixed-width line (job number, process id,
``time.time()``) appended with one ``os.write`` to a file of its own process under
the journal folder. No network, no lock: the same cost for every system, and a line
is in the kernel's page cache once ``record`` returns, so it survives a SIGKILL of the
process that wrote it. :func:`read` gives every job's completion times;
:func:`count` is cheap enough to poll (it only stats the files).

The folder comes from the ``BENCH_JOURNAL_DIR`` environment variable: worker
processes started by a peer's own command line have no other way to be told.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from pathlib import Path

__all__ = [
    "ENV",
    "LINE_BYTES",
    "WARMUP",
    "count",
    "gate_open",
    "open_gate",
    "read",
    "record",
    "run_job",
]

#: Environment variable naming the journal folder.
ENV = "BENCH_JOURNAL_DIR"
#: Job number of the warm-up job each system runs before the clock starts.
WARMUP = 999_999_999
#: Seconds between two looks at the gate.
GATE_POLL_S = 0.01
_FORMAT = "{n:>10d} {pid:>8d} {t:>20.6f}\n"
#: Bytes of one journal line.
LINE_BYTES = len(_FORMAT.format(n=0, pid=0, t=0.0))

_lock = threading.Lock()
_fd: tuple[int, int] | None = None  # (pid, fd): a forked child opens its own file


def _file() -> int:
    global _fd
    pid = os.getpid()
    current = _fd
    if current is not None and current[0] == pid:
        return current[1]
    with _lock:
        if _fd is None or _fd[0] != pid:
            folder = Path(os.environ[ENV])
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / f"journal-{pid}", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            _fd = (pid, fd)
        return _fd[1]


def record(n: int, when: float | None = None) -> float:
    """Appends "job ``n`` completed its body at ``when`` (default: now)"; returns the
    time written (seconds since the epoch)."""
    t = time.time() if when is None else when
    os.write(_file(), _FORMAT.format(n=n, pid=os.getpid(), t=t).encode())
    return t


def gate_open() -> bool:
    """Whether the benchmark has opened the gate (a file ``open`` in the journal
    folder): jobs that sleep wait for it, so that every job is queued before any runs."""
    return os.path.exists(os.path.join(os.environ[ENV], "open"))


def open_gate(folder: Path) -> None:
    (folder / "open").touch()


def run_job(n: int, sleep_s: float) -> float:
    """The body of every peer's benchmark job: sleeps ``sleep_s`` (0: a no-op; a job
    that sleeps first waits for :func:`gate_open`), then :func:`record`; returns the
    time recorded."""
    if sleep_s:
        while not gate_open():
            time.sleep(GATE_POLL_S)
        time.sleep(sleep_s)
    return record(n)


def count(folder: Path) -> int:
    """Lines in the journal (warm-up included): the total size over the line size."""
    total = 0
    for entry in os.scandir(folder):
        if entry.name.startswith("journal-"):
            total += entry.stat().st_size
    return total // LINE_BYTES


def read(folder: Path) -> dict[int, list[float]]:
    """Every job number's completion times, oldest first (warm-up left out)."""
    done: dict[int, list[float]] = defaultdict(list)
    for path in folder.glob("journal-*"):
        data = path.read_bytes()
        for start in range(0, len(data) - LINE_BYTES + 1, LINE_BYTES):
            n, _pid, t = data[start : start + LINE_BYTES].split()
            if int(n) != WARMUP:
                done[int(n)].append(float(t))
    for times in done.values():
        times.sort()
    return dict(done)
