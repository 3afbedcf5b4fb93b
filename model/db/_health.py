"""Is the database still the one opened, and can it take a write now? One answer per
dialect (the writers call them): a SQLite file that was deleted or replaced under the
service, a lock another process holds; a PostgreSQL or MySQL server that does not
answer or is read-only. Answers name the cause, never a password."""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import time
import urllib.parse
from typing import Any

from sqlalchemy.engine import Engine

__all__ = [
    "FILE_CHECK_INTERVAL_S",
    "FileWatch",
    "mysql_writable",
    "server_writable",
    "sqlite_writable",
]

#: Seconds :meth:`FileWatch.problem` answers from its last look at the file.
FILE_CHECK_INTERVAL_S = 1.0


class FileWatch:
    """Tells when the SQLite file at ``path`` is no longer the one :meth:`remember`
    saw (its device and inode). ``path`` None (memory, a server): never a problem."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        #: (st_dev, st_ino) of the file :meth:`remember` saw.
        self._identity: tuple[int, int] | None = None
        #: When :meth:`problem` last looked (monotonic seconds), and what it found.
        self._seen_at = 0.0
        self._answer: str | None = None

    @property
    def remembered(self) -> str | None:
        """The path, once :meth:`remember` noted its file; else None."""
        return self.path if self._identity is not None else None

    def remember(self) -> None:
        """Notes which file the database is; called once the database is open."""
        if self.path is None:
            return
        found = os.stat(self.path)
        self._identity = (found.st_dev, found.st_ino)
        self._seen_at = time.monotonic()
        self._answer = None

    def problem(self, max_age_s: float = FILE_CHECK_INTERVAL_S) -> str | None:
        """Why the file at the path is no longer the one :meth:`remember` saw (deleted,
        or another file in its place), or None (also before :meth:`remember`).

        Stats the path at most once per ``max_age_s`` seconds and answers the last
        finding in between, so that a caller may ask on every request. Writes after a
        deletion or replacement land in the old file, which nothing will read again.
        """
        path = self.remembered
        if path is None:
            return None
        now = time.monotonic()
        if now - self._seen_at < max_age_s:
            return self._answer
        try:
            found = os.stat(path)
        except FileNotFoundError:
            answer: str | None = f"the database file {path} was deleted while the service ran"
        except OSError as exc:
            answer = f"the database file {path} cannot be read: {exc.strerror}"
        else:
            answer = None
            if (found.st_dev, found.st_ino) != self._identity:
                answer = (
                    f"the database file {path} was replaced while the service ran "
                    "(another file is at its path now)"
                )
        self._answer = answer
        self._seen_at = now
        return answer


def sqlite_writable(watch: FileWatch, timeout_s: float) -> str | None:
    """Why the watched SQLite file cannot take a write now, or None: it is still the
    one opened, and ``BEGIN IMMEDIATE`` (then ``ROLLBACK``) gets the write lock on a
    connection of its own within ``timeout_s`` seconds. A database never remembered
    (in memory: always this process's) is writable."""
    path = watch.remembered
    if path is None:
        return None
    problem = watch.problem(max_age_s=0)
    if problem is not None:
        return problem
    try:
        # mode=rw: a missing file is an error, never a new empty database.
        conn = sqlite3.connect(
            f"file:{urllib.parse.quote(path)}?mode=rw",
            uri=True,
            timeout=timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        return f"cannot open the database file {path}: {exc}"
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        return f"the database file {path} cannot be written: {exc} (waited {timeout_s:g} s)"
    finally:
        conn.close()
    return None


def server_writable(engine: Engine, timeout_s: float) -> str | None:
    """Why the PostgreSQL database of ``engine`` cannot take a write now, or None: a new
    connection (connect and statement timeouts about ``timeout_s``) answers, and its
    transactions are not read-only (a standby, ``default_transaction_read_only``)."""
    dialect = engine.dialect
    cargs, cparams = dialect.create_connect_args(engine.url)
    statement_timeout = f"-c statement_timeout={max(int(timeout_s * 1000), 1)}"
    options = f"{cparams.get('options', '')} {statement_timeout}".strip()
    where = engine.url.render_as_string(hide_password=True)
    try:
        # libpq takes whole seconds, and treats less than 2 as 2.
        params = {**cparams, "connect_timeout": max(math.ceil(timeout_s), 2)}
        conn = dialect.loaded_dbapi.connect(*cargs, **{**params, "options": options})
    except dialect.loaded_dbapi.Error as exc:
        return f"cannot reach the database {where}: {_first_line(exc)}"
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT 1")
        cursor.execute("SHOW transaction_read_only")
        (read_only,) = cursor.fetchone()
    except dialect.loaded_dbapi.Error as exc:
        return f"the database {where} does not answer: {_first_line(exc)}"
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    if str(read_only).lower() == "on":
        return f"the database {where} is read-only (transaction_read_only is on)"
    return None


def _read_only_flags(cursor: Any, error: type[Exception]) -> tuple[Any, Any]:
    # The session's flag is tx_read_only on MariaDB and MySQL before 8.0.3, and
    # transaction_read_only on MySQL since (ER_UNKNOWN_SYSTEM_VARIABLE, 1193).
    try:
        cursor.execute("SELECT @@global.read_only, @@session.tx_read_only")
    except error as exc:
        if not exc.args or exc.args[0] != 1193:
            raise
        cursor.execute("SELECT @@global.read_only, @@session.transaction_read_only")
    server, session = cursor.fetchone()
    return server, session


def mysql_writable(engine: Engine, timeout_s: float) -> str | None:
    """Why the MySQL (MariaDB) database of ``engine`` cannot take a write now, or None: a
    new connection (connect, read and write timeouts about ``timeout_s``) answers, and
    neither the server (``read_only``, a replica) nor its transactions
    (``transaction_read_only``) are read-only."""
    dialect = engine.dialect
    cargs, cparams = dialect.create_connect_args(engine.url)
    where = engine.url.render_as_string(hide_password=True)
    seconds = max(math.ceil(timeout_s), 1)  # PyMySQL takes whole seconds
    try:
        conn = dialect.loaded_dbapi.connect(
            *cargs,
            **{**cparams, "connect_timeout": seconds, "read_timeout": seconds},
            write_timeout=seconds,
        )
    except dialect.loaded_dbapi.Error as exc:
        return f"cannot reach the database {where}: {_first_line(exc)}"
    try:
        server, session = _read_only_flags(conn.cursor(), dialect.loaded_dbapi.Error)
    except dialect.loaded_dbapi.Error as exc:
        return f"the database {where} does not answer: {_first_line(exc)}"
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    if int(server):
        return f"the database {where} is read-only (read_only is on)"
    if int(session):
        return f"the database {where} is read-only (transaction_read_only is on)"
    return None


def _first_line(exc: BaseException) -> str:
    """An error's first line, short: driver messages go on with hints and context."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
