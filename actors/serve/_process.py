"""The supervised process of ``jobservice serve``: the HTTP API and the actors in one
process, started and stopped in order, watched from the main thread.

- SIGTERM or SIGINT: the HTTP server stops taking connections and finishes the
  requests under way, then :meth:`JobService.shutdown` lets running jobs reach their
  next transition and hands them back as ``pending``; exit status 0. A second signal
  exits at once (status 128 + signal): the next start resumes every unfinished job.
- The main thread watches the actor system: if the dispatcher or a pool stops,
  ``/healthz`` already answers 503 and the process exits with :data:`EXIT_ACTORS_DIED`,
  so that its supervisor (systemd's ``Restart=on-failure``) starts it again.
- A :class:`~actors.serve.LogSweeper` deletes job logs older than
  ``log_retention_days`` in the background while the service runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from types import FrameType

import uvicorn
from loguru import logger

from actors.http import create_app
from actors.serve._sweeper import LogSweeper
from actors.service import JobService
from model.db import migrations
from model.errors import ConfigError
from model.settings import Settings

__all__ = [
    "EXIT_ACTORS_DIED",
    "EXIT_CONFIG",
    "EXIT_HTTP_DIED",
    "ServeProcess",
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


def _log_job_end(kind: str, job_id: int, status: str) -> None:
    # The service's log gets a line per job a worker lets go of; every state of the job
    # is in the job's own log.
    logger.info("{} job {} is {}", kind, job_id, status)


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
