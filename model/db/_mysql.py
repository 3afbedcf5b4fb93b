"""The MySQL (MariaDB) writer: PyMySQL connections, every write on a pooled connection
of its own, the server ordering concurrent writers (see :class:`MysqlWriter`)."""

from __future__ import annotations

import contextlib
import re
import select
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import pymysql
import sqlalchemy as sa

from model.db._health import FileWatch, mysql_writable
from model.db._writer import Writer
from model.errors import ConfigError

__all__ = [
    "ISOLATION",
    "MINIMUM_MARIADB",
    "MINIMUM_MYSQL",
    "MysqlWriter",
    "skips_locked_rows",
    "unsupported",
]

_R = TypeVar("_R")

#: Every transaction's isolation. InnoDB's default, REPEATABLE READ, reads a claim's
#: pick from a snapshot and takes gap locks; READ COMMITTED, as PostgreSQL's default,
#: reads the latest committed rows and locks only the rows it changes or picks.
ISOLATION = "READ COMMITTED"
#: Times a write that lost a deadlock or waited past the lock timeout runs again: InnoDB
#: undid it whole (the transaction, or the statement, which this writer then undoes
#: whole), so running it again is running it once.
_LOCK_RETRIES = 3
#: ER_LOCK_WAIT_TIMEOUT, ER_LOCK_DEADLOCK.
_LOCK_ERRORS = frozenset({1205, 1213})
#: CR_SERVER_GONE_ERROR: the statement was not sent (the connection was closed).
_NOT_SENT = 2006
#: The oldest servers this writer runs on: MariaDB 10.2 is the server Harbor 1.4 ships
#: (10.2.10); MySQL 8.0.1 brought ``FOR UPDATE SKIP LOCKED``.
MINIMUM_MARIADB = (10, 2, 0)
MINIMUM_MYSQL = (8, 0, 1)
#: MariaDB's first version with ``FOR UPDATE SKIP LOCKED``; before it, claims wait for
#: each other's row locks (see :meth:`model.db._sql.Statements.claim_steps`).
_SKIP_LOCKED_MARIADB = (10, 6, 0)
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


class MysqlWriter(Writer):
    """MySQL or MariaDB through PyMySQL: every write on a pooled connection of its own;
    the server orders concurrent writers (no lock in this process). Every connection
    reads and writes times as UTC (``time_zone = '+00:00'``), in :data:`ISOLATION`.

    The engine's hot path (:meth:`apply`, :meth:`read_one`) has a pool of its own whose
    connections stay in autocommit: a write of one statement is one round trip, an
    atomic write ``BEGIN`` … ``COMMIT``; no ping before a checkout and no ``ROLLBACK``
    at a checkin (the writer ends every transaction it begins). A pooled connection
    the server closed (a restart) is seen closed before use (its socket at end of
    file) and replaced; a write that lost a deadlock runs again.

    Row counts are rows matched, not rows changed (SQLAlchemy connects with
    ``CLIENT_FOUND_ROWS``), so a guarded change that sets a status to itself counts
    as PostgreSQL's does.

    Every new connection checks the server's version (:func:`unsupported`) and sets
    :attr:`skip_locked` from it."""

    def __init__(self, url: str) -> None:
        engine = sa.create_engine(
            url,
            pool_size=8,
            max_overflow=32,
            pool_pre_ping=True,
            pool_recycle=3600,
            isolation_level=ISOLATION,
        )
        sa.event.listen(engine, "connect", self._on_connect)
        super().__init__(engine, FileWatch(None))
        self._hot = sa.create_engine(
            url,
            pool_size=8,
            max_overflow=32,
            pool_reset_on_return=None,
            isolation_level=ISOLATION,
        )
        sa.event.listen(self._hot, "connect", self._on_connect)
        sa.event.listen(self._hot, "connect", _autocommit)

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        version = dbapi_connection.get_server_info()
        reason = unsupported(version)
        if reason is not None:
            dbapi_connection.close()
            raise ConfigError("database_url", reason)
        self.skip_locked = skips_locked_rows(version)
        # Times are written as naive UTC: the server's clock (UTC_TIMESTAMP) and
        # CURRENT_TIMESTAMP read as UTC too, whatever the server's time zone.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET time_zone = '+00:00'")

    def locked(self) -> AbstractContextManager[object]:
        """No lock: the server orders writers."""
        return contextlib.nullcontext()

    def apply(self, write: Callable[[Any], _R], *, atomic: bool = False) -> _R:
        for attempt in range(1, _LOCK_RETRIES + 2):
            try:
                return self._on_hot(lambda conn: _write(conn, write, atomic))
            except pymysql.err.OperationalError as exc:
                if attempt > _LOCK_RETRIES or _code(exc) not in _LOCK_ERRORS:
                    raise
        raise AssertionError("unreachable")

    def read_one(self, sql: str, params: dict[str, Any]) -> Any:
        def read(conn: Any) -> Any:
            cur = conn.cursor()
            try:
                cur.execute(sql, params)
                rows = cur.fetchall()
            finally:
                cur.close()
            return rows[0] if rows else None

        return self._on_hot(read)

    def _on_hot(self, use: Callable[[Any], _R]) -> _R:
        """Runs ``use(connection)`` on a connection of the hot pool (see
        :meth:`_checkout`). One found closed as the statement was sent (never seen by
        the server) empties the pool, whose connections all went with the server, and
        ``use`` runs once more on a new connection."""
        for attempt in (1, 2):
            conn = self._checkout()
            try:
                return use(conn)
            except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
                if _code(exc) in _LOCK_ERRORS:
                    raise
                conn.invalidate()
                not_sent = isinstance(exc, pymysql.err.InterfaceError) or _code(exc) == _NOT_SENT
                if attempt == 2 or not not_sent:
                    raise
                self._hot.dispose()
            finally:
                conn.close()
        raise AssertionError("unreachable")

    def _checkout(self) -> Any:
        """A connection of the hot pool, open as far as can be seen without a round
        trip. One the server closed (a restart) is dropped with the rest of the pool,
        whose connections all went with the server, and a new one is made (which raises
        the driver's error while the server is away)."""
        conn = self._hot.raw_connection()
        if _alive(conn.driver_connection):
            return conn
        conn.invalidate()
        conn.close()
        self._hot.dispose()
        return self._hot.raw_connection()

    def check_writable(self, timeout_s: float) -> str | None:
        """A new connection answers, and neither the server nor its transactions are
        read-only."""
        return mysql_writable(self.engine, timeout_s)

    def close(self) -> None:
        self._hot.dispose()
        super().close()


class _Cursor:
    """A PyMySQL cursor whose ``execute`` returns the cursor (as sqlite3's and psycopg's
    do), so the store's writes read the same on every dialect."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Any = None) -> _Cursor:
        self._cursor.execute(sql, params)
        return self

    def fetchall(self) -> Any:
        return self._cursor.fetchall()

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    @property
    def lastrowid(self) -> int:
        return int(self._cursor.lastrowid)

    @property
    def description(self) -> Any:
        return self._cursor.description


def _write(conn: Any, write: Callable[[Any], _R], atomic: bool) -> _R:
    driver = conn.driver_connection
    cursor = driver.cursor()
    try:
        if not atomic:
            return write(_Cursor(cursor))
        driver.begin()
        try:
            result = write(_Cursor(cursor))
            driver.commit()
            return result
        except BaseException:
            with contextlib.suppress(pymysql.err.Error):
                driver.rollback()
            raise
    finally:
        cursor.close()


def _alive(driver: Any) -> bool:
    """Whether a pooled connection is still open, without a round trip: an idle
    connection has nothing to read, so a readable socket means the server closed it
    (or sent an error before closing it)."""
    sock = getattr(driver, "_sock", None)
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def _code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _read_version(server_version: str) -> tuple[bool, tuple[int, ...], str] | None:
    """(MariaDB?, version, version as written) of ``10.11.6-MariaDB-0+deb12u1`` or
    ``8.0.36``, or None; a MariaDB that reports itself to old clients as
    ``5.5.5-<version>`` is read as ``<version>``."""
    text = server_version.removeprefix("5.5.5-")
    found = _VERSION.match(text)
    if found is None:
        return None
    version = tuple(int(part) for part in found.groups())
    return "mariadb" in text.lower(), version, found.group(0)


def unsupported(server_version: str) -> str | None:
    """Why a server that reports ``server_version`` (``10.11.6-MariaDB-0+deb12u1``,
    ``8.0.36``) cannot run this service, or None."""
    read = _read_version(server_version)
    if read is None:
        return f"cannot read the database server's version {server_version!r}"
    mariadb, version, written = read
    least = MINIMUM_MARIADB if mariadb else MINIMUM_MYSQL
    if version >= least:
        return None
    name = "MariaDB" if mariadb else "MySQL"
    wanted = ".".join(str(part) for part in least[: 2 if mariadb else 3])
    return (
        f"the database server is {name} {written}; this jobservice needs {name} {wanted} or later"
    )


def skips_locked_rows(server_version: str) -> bool:
    """Whether a server that reports ``server_version`` has ``FOR UPDATE SKIP LOCKED``
    (MariaDB 10.6, MySQL 8.0.1)."""
    read = _read_version(server_version)
    if read is None:
        return False
    mariadb, version, _ = read
    return version >= (_SKIP_LOCKED_MARIADB if mariadb else MINIMUM_MYSQL)


def _autocommit(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.autocommit(True)
