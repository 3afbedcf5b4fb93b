"""The servers the peers need: a throw-away ``redis-server`` and PostgreSQL databases.

Redis runs without persistence (``save ""``, no AOF): the durability benchmark kills
workers, never the broker, so what Redis writes to disk plays no part. PostgreSQL is
the cluster of ``tests/postgres.py`` (fsync off, as in the tests; the same for us and
for procrastinate).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
for extra in (ROOT, ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from postgres import postgres_cluster  # noqa: E402  (tests/ is put on the path above)

__all__ = ["RedisServer", "new_database", "postgres_cluster", "redis_server"]

#: Seconds redis-server may take to answer PING after its start.
REDIS_START_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` on a free loopback port, data in ``folder``."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.folder = folder
        self.port = _free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
                "--logfile",
                str(folder / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start; see {folder / 'redis.log'}")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)


@contextmanager
def redis_server(folder: Path) -> Iterator[RedisServer]:
    """A fresh, empty Redis for one run, stopped at exit."""
    server = RedisServer(folder)
    try:
        yield server
    finally:
        server.stop()


def new_database(port: int) -> str:
    """A new empty database in the cluster on ``port``; its libpq conninfo URL
    (``postgresql://postgres@127.0.0.1:PORT/NAME``)."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://postgres@127.0.0.1:{port}/{name}"
