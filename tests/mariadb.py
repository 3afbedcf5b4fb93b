"""A throw-away MariaDB server for tests: mariadb-install-db and mariadbd in a temporary
folder, on a free loopback port (Debian's ``mariadb-server``).

mariadbd refuses to run as root, so when the tests run as root the server runs as the
``mysql`` user (``--user=mysql``), in a folder that user owns. The server runs with
the grant tables skipped (any user connects, with every right) and without flushing
its log at each commit: a test server, fast, never a model of a production one. Its
transaction isolation is MariaDB's default (``REPEATABLE READ``), so the store's own
choice of isolation is what the tests exercise.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pymysql

__all__ = ["MariaDBServer", "mariadb_server"]

#: Seconds a start may take before the test fails.
_START_TIMEOUT_S = 60.0


def _bin(*names: str) -> str:
    for name in names:
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
        if path is not None:
            return path
    raise RuntimeError(f"{names[0]} not found: install the mariadb-server package")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MariaDBServer:
    """A running server on a free loopback port; :meth:`new_database` gives each test its
    own database."""

    def __init__(self, folder: Path, port: int, as_root: bool) -> None:
        self.folder = folder
        self.port = port
        self._as_root = as_root
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "mysql") -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{database}?charset=utf8mb4"

    def connect(self, database: str | None = None) -> pymysql.connections.Connection:  # type: ignore[type-arg]
        return pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", database=database, autocommit=True
        )

    def new_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        finally:
            conn.close()
        return self.url(name)

    def start(self) -> None:
        """Starts the server (again) and waits until it takes connections."""
        command = [
            _bin("mariadbd", "mysqld"),
            "--no-defaults",
            f"--datadir={self.folder / 'data'}",
            f"--socket={self.folder / 'mysqld.sock'}",
            f"--pid-file={self.folder / 'mysqld.pid'}",
            f"--log-error={self.folder / 'log'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--skip-grant-tables",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
            "--max-connections=1000",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
            "--innodb-buffer-pool-size=128M",
            "--innodb-lock-wait-timeout=30",
        ]
        if self._as_root:
            command.append("--user=mysql")
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                self.connect().close()
                return
            except pymysql.err.OperationalError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    log = (self.folder / "log").read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(f"mariadbd did not start:\n{log}") from None
                time.sleep(0.05)  # polling the server's port until it answers

    def stop(self, mode: str = "fast") -> None:
        """Stops the server: ``fast`` shuts it down cleanly (SIGTERM), ``immediate``
        kills it (SIGKILL; the commits not yet flushed to its log may be lost)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if mode == "immediate" else signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextmanager
def mariadb_server() -> Iterator[MariaDBServer]:
    """Starts a server and stops it (and removes its folder) at exit."""
    folder = Path(tempfile.mkdtemp(prefix="jobservice-mariadb-"))
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(folder, "mysql", "mysql")
    data = folder / "data"
    subprocess.run(
        [
            _bin("mariadb-install-db", "mysql_install_db"),
            "--no-defaults",
            f"--datadir={data}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            *(["--user=mysql"] if as_root else []),
        ],
        check=True,
        capture_output=True,
    )
    server = MariaDBServer(folder, _free_port(), as_root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
