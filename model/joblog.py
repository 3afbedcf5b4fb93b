"""Per-job log files: where they live (as the original) and how lines reach them (loguru)."""

from __future__ import annotations

import os
import threading
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from loguru import Logger, Message

__all__ = ["JobLogSink", "job_log_path", "job_logger"]

#: Job log files kept open between lines (the most recently written ones).
_OPEN_FILES = 64
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


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
    """A loguru sink that appends each record to the file named by its ``job_log`` extra.

    One sink serves every job of one service; it is installed by :meth:`install` and
    only takes records bound by :func:`job_logger` with its token. Strings bound as
    ``secrets`` are replaced by ``***`` before a line is written, a last guard so
    that no password or token reaches a job's log.
    """

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self._handler_id: int | None = None
        self._made: set[str] = set()
        #: Open descriptors by path. Lines are written with one unbuffered ``os.write``
        #: each: a line is in the file as soon as the call returns, with no buffer to
        #: flush or lose, and no text layer to build per file.
        self._open: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def install(self) -> None:
        """Adds the sink to loguru's logger (idempotent)."""
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
        """Removes the sink from loguru's logger (idempotent)."""
        if self._handler_id is not None:
            logger.remove(self._handler_id)
            self._handler_id = None
        with self._lock:
            for fd in self._open.values():
                os.close(fd)
            self._open.clear()

    def _write(self, message: Message) -> None:
        # Runs under loguru's lock for this handler.
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
        """Appends the line ``<time> [<level>] <text>`` to the job log at ``path``, each
        of ``secrets`` written as ``***``.

        The one way a line reaches a job log: loguru's records come through here, and
        so do the state lines the state machine writes for every transition without a
        loguru record (a record costs more than the rest of a no-op job's transition).
        """
        now = datetime.now(UTC) if when is None else when.astimezone(UTC)
        stamp = now.isoformat(timespec="milliseconds")
        line = f"{stamp} [{level}] {text}\n"
        for secret in secrets:
            if secret:
                line = line.replace(secret, "***")
        data = line.encode()
        with self._lock:
            fd = self._open.get(path)
            if fd is None:
                fd = self._open[path] = self._open_log(path)
                if len(self._open) > _OPEN_FILES:
                    os.close(self._open.popitem(last=False)[1])
            else:
                self._open.move_to_end(path)
            while data:  # a regular file takes it all at once, short of a full disk
                data = data[os.write(fd, data) :]

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


def job_logger(sink: JobLogSink, path: str, **identity: Any) -> Logger:
    """A logger whose records go to the job log at ``path`` (and to loguru's other sinks).

    ``identity`` is bound once (``job_id=…, job_type=…``).
    """
    identity.setdefault("secrets", ())
    return logger.bind(job_log_sink=sink.token, job_log=path, **identity)
