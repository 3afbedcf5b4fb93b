"""The loguru sink of every job log of one service, and the loggers bound to it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from loguru import logger

from model.joblog._appender import FLUSH_TIMEOUT_S, LogAppender
from model.stamps import log_stamp, now_us

if TYPE_CHECKING:
    from loguru import Logger, Message

__all__ = ["JobLogSink", "job_logger"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _format(_record: Any) -> str:
    # Returned as the template itself (a callable format gets no implicit newline);
    # the time is written by the sink, isoformat being many times faster than
    # loguru's token formatting on the hot path.
    return "{message}\n{exception}"


class JobLogSink:
    """Where every line of every job log of one service goes: loguru's records bound by
    :func:`job_logger` with this sink's token, and the state lines the state machine
    writes for each transition (:meth:`write_line`).

    Lines reach their files through a :class:`~model.joblog._appender.LogAppender`
    (one writer thread of the sink's own; lines of one job keep their order).
    :meth:`flush` waits until every line queued before the call is in its file;
    :meth:`remove` writes what is queued, then stops the thread. A line written while
    no writer runs (before :meth:`install`, after :meth:`remove`) is appended at once
    by the caller. Strings bound as ``secrets`` are replaced by ``***`` before a line
    is queued, a last guard so that no password or token reaches a job's log.
    """

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self._handler_id: int | None = None
        self._appender = LogAppender()

    def install(self) -> None:
        """Adds the sink to loguru's logger and starts its writer (idempotent)."""
        self._appender.start()
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
        self._appender.stop()

    def flush(self, timeout: float = FLUSH_TIMEOUT_S) -> bool:
        """Waits until every line queued before the call is in its file; False when
        ``timeout`` (seconds) passed first."""
        return self._appender.flush(timeout)

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
        self._appender.append(path, line.encode())


def _epoch_us(when: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (naive: taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // _MICROSECOND


def job_logger(sink: JobLogSink, path: str, **identity: Any) -> Logger:
    """A logger whose records go to the job log at ``path`` (and to loguru's other sinks).

    ``identity`` is bound once (``job_id=…, job_type=…``).
    """
    identity.setdefault("secrets", ())
    return logger.bind(job_log_sink=sink.token, job_log=path, **identity)
