"""The service process's own log: loguru's records and the standard library's (uvicorn's,
alembic's) go to stderr, as text or JSON lines, and a string a job registered as secret
(in a record's ``secrets`` extra) is masked as ``***`` before it is written."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from loguru import Message, Record

__all__ = ["configure_logging"]

#: Record fields that are plumbing, not context worth a log line.
_INTERNAL_EXTRA = frozenset({"job_log_sink", "job_log", "secrets", "ident"})


def _masked(text: str, record: Record) -> str:
    for secret in record["extra"].get("secrets", ()):
        if secret:
            text = text.replace(secret, "***")
    return text


def _text_format(record: Record) -> str:
    extra = record["extra"]
    record["extra"]["ident"] = (
        f"{extra['job_type']} job {extra['job_id']}: " if "job_id" in extra else ""
    )
    return "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <8} {name}: {extra[ident]}{message}\n{exception}"


class _StderrSink:
    """Writes loguru records to stderr, as text or JSON lines, secrets masked."""

    def __init__(self, json_lines: bool) -> None:
        self.json_lines = json_lines

    def write(self, message: Message) -> None:
        record = message.record
        if self.json_lines:
            line: dict[str, Any] = {
                "time": record["time"].isoformat(timespec="milliseconds"),
                "level": record["level"].name,
                "logger": record["name"],
                "message": record["message"],
            }
            line.update({k: v for k, v in record["extra"].items() if k not in _INTERNAL_EXTRA})
            if record["exception"] is not None:
                exc_type, exc_value, exc_tb = record["exception"]
                line["exception"] = "".join(traceback.format_exception(exc_type, exc_value, exc_tb))
            text = json.dumps(line, default=str) + "\n"
        else:
            text = str(message)
        sys.stderr.write(_masked(text, record))
        sys.stderr.flush()


class _ToLoguru(logging.Handler):
    """Hands the standard library's records (uvicorn, alembic) to loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        name = record.name

        def named(loguru_record: Record) -> None:
            loguru_record["name"] = name

        logger.patch(named).opt(exception=record.exc_info).log(level, record.getMessage())


def configure_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    """Sends the process's logs to stderr: loguru's and the standard library's.

    Tracebacks carry no variable values (loguru's ``diagnose`` is off): a value in a
    frame may be a password.
    """
    logger.remove()
    sink = _StderrSink(json_lines)
    logger.add(
        sink.write,
        level=level,
        format=_text_format,
        backtrace=False,
        diagnose=False,
        colorize=False,
        catch=True,
    )
    logging.basicConfig(handlers=[_ToLoguru()], level=logging.INFO, force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic"):
        std = logging.getLogger(name)
        std.handlers = []
        std.propagate = True
    # A line per connection (alembic) or per registry request (httpx) is noise in a
    # service's log; the job logs say what each job asked of which registry.
    for name in ("alembic", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
