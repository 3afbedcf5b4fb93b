"""The supervised process of ``jobservice serve`` and ``jobservice worker``: the job
actors started and stopped in order, watched from the main thread. Subclasses add a
door into the service (:class:`~actors.serve.ServeProcess`, the HTTP API) or none
(:class:`~actors.serve.WorkerProcess`).

- At start: the kinds of ``kind_modules`` are loaded and the database must be at the
  newest migration; either failing is a :class:`ConfigError` (exit status
  :data:`EXIT_CONFIG` in the CLI).
- SIGTERM or SIGINT: the door closes first, then :meth:`JobService.shutdown` lets
  running jobs reach their next transition and hands them back as ``pending``; exit
  status 0. A second signal exits at once (status 128 + signal): the next start
  resumes every unfinished job.
- The main thread watches the actor system: if the dispatcher or a pool stops, the
  process exits with :data:`EXIT_ACTORS_DIED`, so that its supervisor (systemd's
  ``Restart=on-failure``) starts it again.
- A :class:`~actors.serve.LogSweeper` deletes job logs older than
  ``log_retention_days`` in the background while the service runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from importlib.metadata import PackageNotFoundError, version
from types import FrameType
from typing import NoReturn

from loguru import logger

from actors.serve._sweeper import LogSweeper
from actors.service import JobService
from model.db import migrations
from model.kinds_loader import load_kinds
from model.settings import Settings

__all__ = [
    "EXIT_ACTORS_DIED",
    "EXIT_CONFIG",
    "EXIT_HTTP_DIED",
    "ServiceProcess",
    "exit_process",
]

#: Exit status for a setting or database that does not work (a restart will not help).
EXIT_CONFIG = 2
#: Exit status when the actor system died under a running service.
EXIT_ACTORS_DIED = 3
#: Exit status when the HTTP server stopped by itself (``serve`` only).
EXIT_HTTP_DIED = 4
#: Seconds between two looks at the actor system (and the door).
WATCH_INTERVAL_S = 0.5
#: Seconds the shutdown may take after a failure (the actors are already in trouble).
FAILED_SHUTDOWN_S = 5.0

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _log_job_end(kind: str, job_id: int, status: str) -> None:
    # The service's log gets a line per job a worker lets go of; every state of the job
    # is in the job's own log.
    logger.info("{} job {} is {}", kind, job_id, status)


class ServiceProcess:
    """Runs a :class:`JobService` until a signal or a failure; :meth:`run` returns the
    exit status.

    The hooks a door overrides run in the main thread, in this order: :meth:`prepare`
    (before the service starts; a :class:`ConfigError` here stops the start),
    :meth:`open` (the service is up), :meth:`failure` (at every look of the watch),
    :meth:`close` (before the service's shutdown). :meth:`abandon` runs instead of
    :meth:`open` when the service fails to start.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._wake = threading.Event()
        self._signals: list[int] = []
        self.service: JobService | None = None

    # -- the hooks of a door -------------------------------------------------------------

    def prepare(self) -> None:
        """Takes what the door needs before the service starts (a socket)."""

    def abandon(self) -> None:
        """Releases what :meth:`prepare` took: the service did not start."""

    def open(self, service: JobService) -> None:
        """Opens the door into the started ``service`` and logs the start line."""

    def failure(self) -> int | None:
        """The exit status when the door failed by itself, else None."""
        return None

    def stopping(self) -> None:
        """Runs in the main thread inside the first signal's handler: tells the door
        to stop taking work (a flag, nothing that blocks)."""

    def close(self) -> None:
        """Waits for the door to close (bounded)."""

    # -- the process ---------------------------------------------------------------------

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
        kinds = load_kinds(settings)
        migrations.check_current(settings.database_url)
        self.prepare()
        service = self.service = JobService(settings, kinds)
        try:
            service.start()
        except BaseException:
            self.abandon()
            raise
        service.add_job_listener(_log_job_end)
        sweeper = LogSweeper(
            settings.log_dir, settings.log_retention_days, settings.log_sweep_interval
        ).start()
        self.open(service)
        code = self._watch(service)
        self.close()
        sweeper.stop()
        try:
            service.shutdown(
                settings.shutdown_timeout
                if code == 0
                else min(settings.shutdown_timeout, FAILED_SHUTDOWN_S)
            )
        except Exception as exc:
            logger.warning(
                "shutdown did not finish cleanly ({!r}); unfinished jobs resume at the next start",
                exc,
            )
        logger.info("jobservice stopped (exit status {})", code)
        return code

    def _watch(self, service: JobService) -> int:
        """Waits for a signal, the actor system's death or the door's failure."""
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
            code = self.failure()
            if code is not None:
                return code

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
        self.stopping()
        self._wake.set()

    def where(self) -> str:
        """The end of a start line: the database (no password) and the log folder."""
        return f"(database {safe_url(self.settings.database_url)}, logs in {self.settings.log_dir})"


def package_version() -> str:
    """The installed jobservice's version ("0" when run from a tree not installed)."""
    try:
        return version("jobservice")
    except PackageNotFoundError:
        return "0"


def safe_url(url: str) -> str:
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


def exit_process(code: int) -> NoReturn:
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
