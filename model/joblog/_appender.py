"""The appender: one thread that appends queued lines to their job log files."""

from __future__ import annotations

import collections
import os
import threading
import time
from collections import OrderedDict

from loguru import logger

__all__ = ["GATHER_S", "IDLE_AFTER_S", "MAX_LINES_BEHIND", "QUIET_S", "LogAppender"]

#: Job log files kept open between lines (the most recently written ones).
_OPEN_FILES = 64
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
#: Seconds between two passes of the writer; a line is in its file at most twice this
#: long after it was logged (see :data:`QUIET_S`), sooner when someone flushes.
GATHER_S = 0.02
#: Seconds without a new line the writer waits for before a pass (at most
#: :data:`GATHER_S` more): its file calls then fall between two jobs at a steady rate,
#: not on one in flight.
QUIET_S = 0.002
#: Seconds without a line after which the writer stops looking every :data:`GATHER_S`
#: and sleeps until a line wakes it.
IDLE_AFTER_S = 1.0
#: Lines queued and not yet written past which :meth:`LogAppender.append` waits for
#: the writer (a disk slower than the jobs holds them up instead of filling memory).
MAX_LINES_BEHIND = 20_000
#: Seconds :meth:`LogAppender.flush` waits by default.
FLUSH_TIMEOUT_S = 10.0


class LogAppender:
    """Appends lines to files from a thread of its own (``jobservice-joblog-writer``),
    so that a job's thread never waits on the file system: a thread that creates a log
    file and appends to it hands the GIL to another thread at each of those system calls
    and waits to get it back, which costs a no-op job more than the rest of its work.

    The writer looks for lines every :data:`GATHER_S`, waits for a moment without a
    new one (:data:`QUIET_S`, at most :data:`GATHER_S` more), and appends the lines of
    each file with one ``write`` (keeping the most recent :data:`_OPEN_FILES` files open).
    After :data:`IDLE_AFTER_S` without a line it sleeps until the next line wakes it.
    So while jobs run, at any rate, no job wakes the writer: a thread woken by a
    thread that was itself just woken (submit, pool, worker, writer) sometimes waits a
    quarter of a millisecond for a CPU, which was a job's tail at a steady rate.
    Lines of one file keep their order. A thread that finds more than
    :data:`MAX_LINES_BEHIND` lines waiting waits for them to be written. A line appended
    while no writer runs (before :meth:`start`, after :meth:`stop`) is written at once
    by the caller. Every method is safe to call from any thread.
    """

    def __init__(self) -> None:
        #: Lines to write (path, data, number); appended under ``_lock`` so that their
        #: order is their numbers' order.
        self._lines: collections.deque[tuple[str, bytes, int]] = collections.deque()
        self._lock = threading.Lock()
        self._queued = 0  # number of the last line queued
        self._written = 0  # number of the last line the writer is done with
        self._written_changed = threading.Condition(threading.Lock())
        self._writer: threading.Thread | None = None
        self._writer_idle = False  # under _lock: the writer sleeps until a line comes
        self._wake = threading.Event()  # a line for a sleeping writer
        self._hurry = threading.Event()  # a flush or the end: write without gathering
        self._stopping = False
        self._last_line = 0.0  # time.monotonic() of the last line queued
        # The writer thread's own: open descriptors by path, folders made.
        self._open: OrderedDict[str, int] = OrderedDict()
        self._made: set[str] = set()

    @property
    def behind(self) -> int:
        """Lines queued and not yet written."""
        return self._queued - self._written

    def start(self) -> None:
        """Starts the writer thread (idempotent)."""
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_queued, name="jobservice-joblog-writer", daemon=True
                )
                self._writer.start()

    def stop(self) -> None:
        """Writes every queued line and stops the writer (idempotent)."""
        with self._lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                self._stopping = True
                self._hurry.set()
                self._wake.set()
        if writer is not None:
            writer.join()

    def flush(self, timeout: float = FLUSH_TIMEOUT_S) -> bool:
        """Waits until every line queued before the call is in its file; False when
        ``timeout`` (seconds) passed first."""
        with self._lock:
            target, writer = self._queued, self._writer
        if writer is None or writer is threading.current_thread():
            return True
        with self._written_changed:
            if self._written >= target:
                return True
        self._hurry.set()
        with self._written_changed:
            return self._written_changed.wait_for(lambda: self._written >= target, timeout)

    def append(self, path: str, data: bytes) -> None:
        """Queues ``data`` (whole lines) for the file at ``path``, creating the file and
        its folders when missing; written at once when no writer runs."""
        behind = 0
        with self._lock:
            writer = self._writer
            if writer is not None:
                self._queued += 1
                self._lines.append((path, data, self._queued))
                self._last_line = time.monotonic()
                if self._writer_idle:
                    self._writer_idle = False
                    self._wake.set()
                behind = self._queued - self._written
        if writer is None:
            _append_once(path, data)
        elif behind > MAX_LINES_BEHIND:
            # The disk is slower than the jobs: the job waits, rather than lines pile up.
            self.flush()

    def _write_queued(self) -> None:
        """Runs in the writer thread."""
        lines = self._lines
        quiet_s = 0.0  # looked for lines this long and found none
        while True:
            with self._lock:
                idle = not lines and not self._stopping and quiet_s >= IDLE_AFTER_S
                self._writer_idle = idle
            if idle:
                self._wake.wait()
                self._wake.clear()
                quiet_s = 0.0
            if not self._hurry.wait(GATHER_S):
                self._wait_quiet()
            self._hurry.clear()
            stopping = self._stopping
            by_path: dict[str, list[bytes]] = {}
            last = 0
            while lines:
                path, data, last = lines.popleft()
                by_path.setdefault(path, []).append(data)
            for path, chunks in by_path.items():
                self._append(path, b"".join(chunks))
            quiet_s = 0.0 if last else quiet_s + GATHER_S
            if last:
                with self._written_changed:
                    self._written = last
                    self._written_changed.notify_all()
            if stopping and not lines:
                break
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()

    def _wait_quiet(self) -> None:
        """Waits until no line came for :data:`QUIET_S`, at most :data:`GATHER_S`."""
        deadline = time.monotonic() + GATHER_S
        while (now := time.monotonic()) < deadline:
            left = QUIET_S - (now - self._last_line)
            if left <= 0 or self._hurry.wait(left):
                return

    def _append(self, path: str, data: bytes) -> None:
        """Runs in the writer thread; reports a file it cannot write and goes on."""
        try:
            fd = self._open.get(path)
            if fd is None:
                fd = self._open[path] = self._open_log(path)
                if len(self._open) > _OPEN_FILES:
                    os.close(self._open.popitem(last=False)[1])
            else:
                self._open.move_to_end(path)
            _write_all(fd, data)
        except OSError as exc:
            bad = self._open.pop(path, None)
            if bad is not None:
                os.close(bad)
            logger.error("cannot write the job log {}: {}", path, exc.strerror or exc)
        except Exception as exc:  # the writer must outlive any one file
            logger.opt(exception=exc).error("cannot write the job log {}: {!r}", path, exc)

    def _open_log(self, path: str) -> int:
        folder = os.path.dirname(path)
        if folder not in self._made:
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)
        try:
            return os.open(path, _OPEN_FLAGS, 0o644)
        except FileNotFoundError:  # the log sweeper removed the emptied folder
            os.makedirs(folder, exist_ok=True)
            return os.open(path, _OPEN_FLAGS, 0o644)


def _append_once(path: str, data: bytes) -> None:
    """Appends ``data`` to ``path`` in the calling thread (no writer runs)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, _OPEN_FLAGS, 0o644)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    while data:  # a regular file takes it all at once, short of a full disk
        data = data[os.write(fd, data) :]
