"""``jobservice serve``: the job actors with the HTTP API in front of them.

uvicorn runs in its own thread (``HttpServerThread``) and leaves the signals to the
main thread. At a stop, the HTTP server stops taking connections and finishes the
requests under way before the service shuts down. If it stops by itself, the
process exits with :data:`~actors.serve.EXIT_HTTP_DIED`; while the actor system is
dead, ``/healthz`` answers 503 until the process exits.
"""

from __future__ import annotations

import socket
import threading

import uvicorn
from loguru import logger

from actors.http import create_app
from actors.serve._process import EXIT_HTTP_DIED, ServiceProcess
from actors.service import JobService
from model.errors import ConfigError
from model.settings import Settings

__all__ = ["ServeProcess"]

#: Seconds the HTTP server may take to finish the requests under way at a stop.
HTTP_GRACE_S = 5.0


class ServeProcess(ServiceProcess):
    """The service and its HTTP API until a signal or a failure; :meth:`run` returns the
    exit status."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.server: uvicorn.Server | None = None
        self._sock: socket.socket | None = None
        self._http: threading.Thread | None = None

    def prepare(self) -> None:
        """Binds the listening socket: a taken address stops the start before the
        actors run."""
        self._sock = _listen(self.settings.listen_host, self.settings.listen_port)

    def abandon(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def open(self, service: JobService) -> None:
        """Starts uvicorn on the bound socket in ``HttpServerThread``."""
        sock = self._sock
        assert sock is not None, "prepare() binds the socket before open()"
        app = create_app(service)
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=True,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=int(min(HTTP_GRACE_S, self.settings.shutdown_timeout)) or 1,
        )
        server = self.server = uvicorn.Server(config)
        self._http = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="HttpServerThread", daemon=True
        )
        host, port = sock.getsockname()[:2]
        self._http.start()
        logger.info(
            "jobservice {} listening on http://{}:{} {}", app.version, host, port, self.where()
        )

    def failure(self) -> int | None:
        if self._http is not None and not self._http.is_alive():
            logger.error("the HTTP server stopped by itself: exiting")
            return EXIT_HTTP_DIED
        return None

    def stopping(self) -> None:
        if self.server is not None:
            self.server.should_exit = True

    def close(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self._http is not None:
            self._http.join(HTTP_GRACE_S + 1)


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
