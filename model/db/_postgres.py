"""The PostgreSQL writer (see :mod:`model.db._writer`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import psycopg
import sqlalchemy as sa

from model.db._health import FileWatch, server_writable
from model.db._writer import Writer

__all__ = ["PostgresWriter"]

_R = TypeVar("_R")


class PostgresWriter(Writer):
    """PostgreSQL: every write on a pooled connection of its own; the server orders
    concurrent writers (no lock in this process).

    The engine's hot path (:meth:`apply`, :meth:`read_one`) has a pool of its own,
    without the ping SQLAlchemy sends before each checkout, and runs a write of one
    statement in autocommit: one round trip, where ping, ``BEGIN`` and ``COMMIT`` made
    it four. A connection found broken (the server restarted) is dropped from the pool
    and the write fails, for its caller to write again (the pools do, until it lands).
    """

    def __init__(self, url: str) -> None:
        engine = sa.create_engine(url, pool_size=8, max_overflow=32, pool_pre_ping=True)
        sa.event.listen(engine, "connect", _postgres_on_connect)
        super().__init__(engine, FileWatch(None))
        self._hot = sa.create_engine(url, pool_size=8, max_overflow=32)
        sa.event.listen(self._hot, "connect", _postgres_on_connect)

    def locked(self) -> AbstractContextManager[object]:
        """No lock: the server orders writers."""
        return contextlib.nullcontext()

    def apply(self, write: Callable[[Any], _R], *, atomic: bool = False) -> _R:
        return self._on_hot(lambda conn: self._write(conn, write, atomic))

    def read_one(self, sql: str, params: dict[str, Any]) -> Any:
        def read(conn: Any) -> Any:
            rows = self._autocommit(conn, lambda cur: cur.execute(sql, params).fetchall())
            return rows[0] if rows else None

        return self._on_hot(read)

    def _on_hot(self, use: Callable[[Any], _R]) -> _R:
        """Runs ``use(connection)`` on a connection of the hot pool. A pooled connection
        the server closed meanwhile (a restart) fails at its first statement, before
        the server saw it: the pool, whose connections all went with the server, is
        emptied, and ``use`` runs once more on a new connection."""
        for attempt in (1, 2):
            conn = self._hot.raw_connection()
            try:
                return use(conn)
            except psycopg.OperationalError:
                broken = bool(getattr(conn.driver_connection, "broken", True))
                conn.invalidate()
                if attempt == 2 or not broken:
                    raise
                self._hot.dispose()
            finally:
                conn.close()
        raise AssertionError("unreachable")

    def _write(self, conn: Any, write: Callable[[Any], _R], atomic: bool) -> _R:
        if not atomic:
            return self._autocommit(conn, write)
        try:
            result = write(conn.cursor())
            conn.commit()
            return result
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            raise

    @staticmethod
    def _autocommit(conn: Any, run: Callable[[Any], _R]) -> _R:
        driver: Any = conn.driver_connection
        driver.autocommit = True
        try:
            return run(conn.cursor())
        finally:
            if not driver.broken:
                driver.autocommit = False

    def close(self) -> None:
        self._hot.dispose()
        super().close()

    def check_writable(self, timeout_s: float) -> str | None:
        """A new connection answers, and its transactions are not read-only."""
        return server_writable(self.engine, timeout_s)


def _postgres_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Times are written as naive UTC by the hot path: read them as UTC whatever the
    # server's time zone.
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.commit()
