"""A throw-away PostgreSQL cluster for tests: initdb and pg_ctl in a temporary folder.

PostgreSQL refuses to run as root, so when the tests run as root the cluster runs as
the ``postgres`` user, in a folder that user owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

__all__ = ["PostgresCluster", "postgres_cluster"]


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install the postgresql package")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """A running cluster on a free loopback port; :meth:`new_database` gives each test
    its own database."""

    def __init__(self, folder: Path, port: int, as_user: list[str]) -> None:
        self.folder = folder
        self.port = port
        self._as_user = as_user

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def start(self) -> None:
        """Starts the cluster (again) and waits until it takes connections."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder}"
        options += " -c fsync=off -c synchronous_commit=off"
        subprocess.run(
            [
                *self._as_user,
                _bin("pg_ctl"),
                "-D",
                str(self.folder / "data"),
                "-o",
                options,
                "-l",
                str(self.folder / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            capture_output=True,
        )

    def stop(self, mode: str = "immediate") -> None:
        """Stops the cluster; ``fast`` lets sessions end and commits reach the disk first
        (``immediate`` may lose the last commits: the cluster runs with
        ``synchronous_commit=off``)."""
        subprocess.run(
            [
                *self._as_user,
                _bin("pg_ctl"),
                "-D",
                str(self.folder / "data"),
                "-m",
                mode,
                "stop",
            ],
            check=False,
            capture_output=True,
        )


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """Starts a cluster and stops it (and removes its folder) at exit."""
    folder = Path(tempfile.mkdtemp(prefix="jobservice-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = folder / "data"
    subprocess.run(
        [*as_user, _bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    cluster = PostgresCluster(folder, port, as_user)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
