"""Per-job log files: where they live (as the original) and how lines reach them (loguru)."""

from __future__ import annotations

import collections
import os
import threading
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from loguru import logger

from model.stamps import log_stamp, now_us

if TYPE_CHECKING:
    from loguru import Logger, Message

__all__ = ["JobLogSink", "job_log_path", "job_logger"]

#: Job log files kept open between lines (the most recently written ones).
_OPEN_FILES = 64
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
#: Seconds the writer gathers lines after the first of a pass; a line is in its file
#: this long after it was logged, at most (sooner when someone flushes).
GATHER_S = 0.02
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
#: Lines queued and not yet written past which :meth:`JobLogSink.write_line` waits for
#: the writer (a disk slower than the jobs holds them up instead of filling memory).
MAX_LINES_BEHIND = 20_000
#: Seconds :meth:`JobLogSink.flush` waits by default.
_FLUSH_TIMEOUT_S = 10.0


def _format(_record: Any) -> str:
    # Returned as the template itself (a callable format gets no implicit newline);
    # the time is written by the sink, isoformat being many times faster than
    # loguru's token formatting on the hot path.
    return "{message}\n{exception}"


def job_log_path(base: str | os.PathLike[str], job_id: int) -> str:
    """The original's log path: the thousands of the id become nested folders.

    ``job_log_path("/l", 123) == "/l/job_123.log"``,
    1234567 → ``/l/1/234/job_1234567.log``, 1002003004 → ``/l/1/002/003/job_1002003004.log``.
    """
    if job_id < 0:
        raise ValueError(f"job id must not be negative, got {job_id}")
    digits = str(job_id)
    folders: list[str] = []
    # Every full group of three digits left of the last three is one folder level.
    head = digits[:-3]
    while head:
        folders.insert(0, head[-3:] if len(head) > 3 else head)
        head = head[:-3]
    return os.path.join(base, *folders, f"job_{job_id}.log")


class JobLogSink:
    """Where every line of every job log of one service goes: loguru's records bound by
    :func:`job_logger` with this sink's token, and the state lines the state machine
    writes for each transition (:meth:`write_line`).

    Lines are written by one thread of the sink's own, so that a job's thread never
    waits on the file system: a worker that creates a log file and appends to it hands
    the GIL to another thread at each of those system calls and waits to get it back,
    which costs a no-op job more than the rest of its work. The writer wakes when a line
    comes after a quiet spell, gathers lines for :data:`GATHER_S` more, then appends the
    lines of each file with one ``write`` (keeping the most recent files open): under
    load it wakes every :data:`GATHER_S`, not once per line, so a busy job thread wakes
    no other thread to log. Lines of one job keep their order. A thread that finds more
    than :data:`MAX_LINES_BEHIND` lines waiting waits for them to be written.

    :meth:`flush` waits until every line queued before the call is in its file;
    :meth:`remove` writes what is queued, then stops the thread. A line written while
    no writer runs (before :meth:`install`, after :meth:`remove`) is appended at once
    by the caller. Strings bound as ``secrets`` are replaced by ``***`` before a line
    is queued, a last guard so that no password or token reaches a job's log.
    """

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self._handler_id: int | None = None
        #: Lines to write (path, line, number); appended under ``_lock`` so that their
        #: order is their numbers' order.
        self._lines: collections.deque[tuple[str, bytes, int]] = collections.deque()
        self._lock = threading.Lock()
        self._queued = 0  # number of the last line queued
        self._written = 0  # number of the last line the writer is done with
        self._written_changed = threading.Condition(threading.Lock())
        self._writer: threading.Thread | None = None
        self._writer_idle = False  # under _lock: the writer waits for a first line
        self._wake = threading.Event()  # a first line after a quiet spell
        self._hurry = threading.Event()  # a flush or the end: write without gathering
        self._stopping = False
        # The writer thread's own: open descriptors by path, folders made.
        self._open: OrderedDict[str, int] = OrderedDict()
        self._made: set[str] = set()

    def install(self) -> None:
        """Adds the sink to loguru's logger and starts its writer (idempotent)."""
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_queued, name="jobservice-joblog-writer", daemon=True
                )
                self._writer.start()
        if self._handler_id is None:
            token = self.token
            self._handler_id = logger.add(
                self._write,
                level="DEBUG",
                format=_format,
                filter=lambda record: record["extra"].get("job_log_sink") == token,
                catch=True,
                # Tracebacks without local variables' values: those may hold secrets.
                backtrace=False,
                diagnose=False,
            )

    def remove(self) -> None:
        """Removes the sink from loguru's logger, writes every queued line and stops the
        writer (idempotent)."""
        if self._handler_id is not None:
            logger.remove(self._handler_id)
            self._handler_id = None
        with self._lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                self._stopping = True
                self._hurry.set()
                self._wake.set()
        if writer is not None:
            writer.join()

    def flush(self, timeout: float = _FLUSH_TIMEOUT_S) -> bool:
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

    def _write(self, message: Message) -> None:
        # Runs under loguru's lock for this handler, in the logging thread.
        record = message.record
        extra = record["extra"]
        self.write_line(
            extra["job_log"],
            record["level"].name,
            message.removesuffix("\n"),
            extra.get("secrets", ()),
            record["time"],
        )

    def write_line(
        self,
        path: str,
        level: str,
        text: str,
        secrets: tuple[str, ...] = (),
        when: datetime | None = None,
    ) -> None:
        """Queues the line ``<time> [<level>] <text>`` for the job log at ``path``, each of
        ``secrets`` written as ``***``; ``<time>`` is ``when`` or now.

        The one way a line reaches a job log: loguru's records come through here, and
        so do the state lines the state machine writes for every transition without a
        loguru record (a record costs more than the rest of a no-op job's transition).
        """
        us = now_us() if when is None else _epoch_us(when)
        line = f"{log_stamp(us)} [{level}] {text}\n"
        for secret in secrets:
            if secret:
                line = line.replace(secret, "***")
        data = line.encode()
        behind = 0
        with self._lock:
            writer = self._writer
            if writer is not None:
                self._queued += 1
                self._lines.append((path, data, self._queued))
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
        # The writer thread.
        lines = self._lines
        while True:
            with self._lock:
                idle = self._writer_idle = not lines and not self._stopping
            if idle:
                self._wake.wait()
                self._wake.clear()
            self._hurry.wait(GATHER_S)
            self._hurry.clear()
            stopping = self._stopping
            by_path: dict[str, list[bytes]] = {}
            last = 0
            while lines:
                path, data, last = lines.popleft()
                by_path.setdefault(path, []).append(data)
            for path, chunks in by_path.items():
                self._append(path, b"".join(chunks))
            if last:
                with self._written_changed:
                    self._written = last
                    self._written_changed.notify_all()
            if stopping and not lines:
                break
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()

    def _append(self, path: str, data: bytes) -> None:
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


def _epoch_us(when: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (naive: taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // _MICROSECOND


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


def job_logger(sink: JobLogSink, path: str, **identity: Any) -> Logger:
    """A logger whose records go to the job log at ``path`` (and to loguru's other sinks).

    ``identity`` is bound once (``job_id=…, job_type=…``).
    """
    identity.setdefault("secrets", ())
    return logger.bind(job_log_sink=sink.token, job_log=path, **identity)
