"""``jobservice serve``: the HTTP API and the actors in one supervised process.

- Logs go to stderr through loguru (text, or JSON lines), the standard library's
  (uvicorn's, alembic's) too; a string a job registered as secret never reaches them.
- SIGTERM or SIGINT: the HTTP server stops taking connections and finishes the
  requests under way, then :meth:`JobService.shutdown` lets running jobs reach their
  next transition and hands them back as ``pending``; exit status 0. A second signal
  exits at once (status 128 + signal): the next start resumes every unfinished job.
- The main thread watches the actor system: if the dispatcher or a pool stops,
  ``/healthz`` already answers 503 and the process exits with :data:`EXIT_ACTORS_DIED`,
  so that its supervisor (systemd's ``Restart=on-failure``) starts it again.
- A :class:`~actors.sweeper.LogSweeper` deletes job logs older than
  ``log_retention_days`` in the background.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import traceback
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
from loguru import logger

from actors.api import create_app
from actors.service import JobService
from actors.sweeper import LogSweeper
from model.db import migrations
from model.errors import ConfigError
from model.settings import Settings

if TYPE_CHECKING:
    from loguru import Message, Record

__all__ = [
    "EXIT_ACTORS_DIED",
    "EXIT_CONFIG",
    "EXIT_HTTP_DIED",
    "ServeProcess",
    "configure_logging",
    "exit_process",
]

#: Exit status for a setting or database that does not work (a restart will not help).
EXIT_CONFIG = 2
#: Exit status when the actor system died under a running service.
EXIT_ACTORS_DIED = 3
#: Exit status when the HTTP server stopped by itself.
EXIT_HTTP_DIED = 4
#: Seconds between two looks at the actor system and the HTTP server.
WATCH_INTERVAL_S = 0.5
#: Seconds the HTTP server may take to finish the requests under way at a stop.
HTTP_GRACE_S = 5.0

#: Record fields that are plumbing, not context worth a log line.
_INTERNAL_EXTRA = frozenset({"job_log_sink", "job_log", "secrets", "ident"})


# -- logging ----------------------------------------------------------------------------------


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


def _log_job_end(kind: str, job_id: int, status: str) -> None:
    # The service's log gets a line per job a worker lets go of; every state of the job
    # is in the job's own log.
    logger.info("{} job {} is {}", kind, job_id, status)


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


# -- the process --------------------------------------------------------------------------------


class ServeProcess:
    """Runs the service until a signal or a failure; :meth:`run` returns the exit status."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._wake = threading.Event()
        self._signals: list[int] = []
        self.service: JobService | None = None
        self.server: uvicorn.Server | None = None

    def run(self) -> int:
        """Runs in the main thread (signal handlers can only be installed there)."""
        # Installed first: a signal during the start stops the service once it is up.
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _SIGNALS}
        try:
            return self._run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> int:
        settings = self.settings
        migrations.check_current(settings.database_url)
        sock = _listen(settings.listen_host, settings.listen_port)
        service = self.service = JobService(settings)
        try:
            service.start()
        except BaseException:
            sock.close()
            raise
        service.add_job_listener(_log_job_end)
        sweeper = LogSweeper(
            settings.log_dir, settings.log_retention_days, settings.log_sweep_interval
        ).start()
        app = create_app(service)
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=True,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=int(min(HTTP_GRACE_S, settings.shutdown_timeout)) or 1,
        )
        server = self.server = uvicorn.Server(config)
        # In its own thread, uvicorn leaves the signals to this one.
        http = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="HttpServerThread", daemon=True
        )
        host, port = sock.getsockname()[:2]
        http.start()
        logger.info(
            "jobservice {} listening on http://{}:{} (database {}, logs in {})",
            app.version,
            host,
            port,
            _safe_url(settings.database_url),
            settings.log_dir,
        )
        code = self._watch(service, http)
        server.should_exit = True
        http.join(HTTP_GRACE_S + 1)
        sweeper.stop()
        try:
            service.shutdown(
                settings.shutdown_timeout if code == 0 else min(settings.shutdown_timeout, 5)
            )
        except Exception as exc:
            logger.warning(
                "shutdown did not finish cleanly ({!r}); unfinished jobs resume at the next start",
                exc,
            )
        logger.info("jobservice stopped (exit status {})", code)
        return code

    def _watch(self, service: JobService, http: threading.Thread) -> int:
        """Waits for a signal, the actor system's death or the HTTP server's end."""
        while True:
            self._wake.wait(WATCH_INTERVAL_S)
            if self._signals:
                name = signal.Signals(self._signals[0]).name
                logger.info(
                    "{}: stopping; running jobs are handed back at their next transition "
                    "(a second signal exits at once)",
                    name,
                )
                return 0
            if not service.healthy():
                logger.error(
                    "the actor system died (dispatcher or a pool stopped): exiting with "
                    "status {} so that the supervisor restarts the service",
                    EXIT_ACTORS_DIED,
                )
                return EXIT_ACTORS_DIED
            if not http.is_alive():
                logger.error("the HTTP server stopped by itself: exiting")
                return EXIT_HTTP_DIED

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        """Runs in the main thread, between two bytecodes."""
        if self._signals:
            logger.warning(
                "{} again: exiting now; unfinished jobs resume at the next start",
                signal.Signals(signum).name,
            )
            _flush()
            os._exit(128 + signum)
        self._signals.append(signum)
        if self.server is not None:
            self.server.should_exit = True
        self._wake.set()


_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _listen(host: str, port: int) -> socket.socket:
    """A bound socket (listening starts with the server); :class:`ConfigError` when the
    address is taken or not this machine's."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            "listen_port", f"cannot listen on {host}:{port}: {exc.strerror}"
        ) from None
    return sock


def _safe_url(url: str) -> str:
    """A database URL without its password."""
    try:
        import sqlalchemy

        return sqlalchemy.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def exit_process(code: int) -> None:
    """Ends the process with ``code``. Worker threads stuck in a job past the shutdown
    deadline would keep the interpreter alive: then it ends at once (their jobs are
    ``running`` in the database, and the next start makes them ``pending``)."""
    stuck = [
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread() and t.is_alive() and not t.daemon
    ]
    if stuck:
        logger.warning("threads still busy at exit: {}; exiting anyway", ", ".join(stuck))
        _flush()
        os._exit(code)
    sys.exit(code)
