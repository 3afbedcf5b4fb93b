"""How the store writes, one class per dialect with one interface (:class:`Writer`).

Each writer makes the store's engine (with its dialect's connection settings) and runs
writes of two kinds: plain DBAPI statements on the engine's hot path
(:meth:`Writer.apply`), and SQLAlchemy transactions (:meth:`Writer.transaction`,
:meth:`Writer.session`) for the rest. On SQLite both kinds take the same lock of this
process: a few single statements run in autocommit (SQLite takes its write lock as
each starts), anything larger or atomic in a transaction that starts with
``BEGIN IMMEDIATE``, so writers wait for SQLite's lock instead of failing with
"database is locked".
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from loguru import logger
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from model.db._health import FileWatch, sqlite_writable

__all__ = ["PendingWrite", "SqliteWriter", "Writer"]

_R = TypeVar("_R")

_SQLITE_BUSY_TIMEOUT_MS = 60_000
#: Largest batch of single-statement writes that commit one by one (see
#: :meth:`SqliteWriter.commit_batch`).
OWN_TRANSACTIONS_MAX = 8
#: Seconds a write queued behind the lock's holder waits before it looks whether the
#: lock is free (its holder cut short) and commits what is queued itself.
WAIT_CHECK_S = 1.0
#: Seconds between two checkpoints of the SQLite WAL by the checkpoint thread.
CHECKPOINT_EVERY_S = 1.0
#: Hot-path commits after which a checkpoint comes sooner than that.
CHECKPOINT_AFTER_COMMITS = 1000
#: A checkpoint that is due waits for this long without a commit (the end of a burst of
#: jobs, the gap between two at a steady rate), so that its file syncs do not hold up
#: the next commits; at most :data:`CHECKPOINT_QUIET_MAX_S`, under a load with no gap.
CHECKPOINT_QUIET_S = 0.002
CHECKPOINT_QUIET_MAX_S = 1.0


class Writer(ABC):
    """Writes to one database; safe to share between threads."""

    #: Whether the database skips rows another transaction locked (``SKIP LOCKED``);
    #: only MySQL's claims read it (:class:`model.db._mysql.MysqlWriter` sets it).
    skip_locked = True

    def __init__(self, engine: Engine, file: FileWatch) -> None:
        #: The engine every connection of the store comes from.
        self.engine = engine
        #: The database file, for the health checks (never a problem on a server).
        self.file = file
        # The engine whose transactions are writes (SQLite: BEGIN IMMEDIATE).
        self._write_engine = engine.execution_options(jobservice_write=True)

    @abstractmethod
    def apply(self, write: Callable[[Any], _R], *, atomic: bool = False) -> _R:
        """Runs ``write(cursor)`` (a DBAPI cursor) in a write transaction and returns
        what it returns; raises what it raised, its statements undone. ``atomic``: the
        write runs several statements that must stand or fall together."""

    def apply_soon(
        self, write: Callable[[Any], Any], then: Callable[[Any, BaseException | None], None]
    ) -> None:
        """Runs ``write(cursor)`` as :meth:`apply` does, then ``then(result, error)``
        once it committed or failed. Here at once, in the caller's thread."""
        try:
            result = self.apply(write)
        except Exception as exc:
            then(None, exc)
            return
        then(result, None)

    @abstractmethod
    def locked(self) -> AbstractContextManager[object]:
        """Holds this process's write lock (none on a server) for a write of its own."""

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A SQLAlchemy Core connection in a write transaction (under :meth:`locked`),
        committed on success, rolled back on an exception."""
        with self.locked(), self._write_engine.begin() as conn:
            yield conn

    @contextmanager
    def session(self) -> Iterator[Session]:
        """An ORM session in a write transaction (under :meth:`locked`), committed on
        success, rolled back on an exception."""
        with self.locked(), Session(self._write_engine) as session, session.begin():
            yield session

    @abstractmethod
    def read_one(self, sql: str, params: dict[str, Any]) -> Any:
        """The first row of the read ``sql`` (the dialect's parameter style), or None."""

    @abstractmethod
    def check_writable(self, timeout_s: float) -> str | None:
        """Why a write could not start now, or None; waits at most about ``timeout_s``
        seconds (see :mod:`model.db._health`)."""

    def close(self) -> None:
        """Closes every pooled connection."""
        self.engine.dispose()


class PendingWrite:
    """One write waiting for the SQLite write lock (see :meth:`SqliteWriter.apply`):
    ``done`` once run, with its ``result`` or its ``error``."""

    __slots__ = ("atomic", "done", "error", "result", "then", "waiter", "write")

    def __init__(
        self,
        write: Callable[[Any], Any],
        atomic: bool = False,
        then: Callable[[Any, BaseException | None], None] | None = None,
    ) -> None:
        self.write = write
        self.atomic = atomic
        #: What to call once it committed or failed (:meth:`SqliteWriter.apply_soon`).
        self.then = then
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        #: Held until the write committed or failed, for a caller that waits for it
        #: (:meth:`SqliteWriter.apply`); None for one that does not.
        self.waiter: threading.Lock | None = None
        if then is None:
            self.waiter = threading.Lock()
            self.waiter.acquire()

    def finished(self) -> None:
        """The write committed or failed: its waiter goes on."""
        if self.waiter is not None and self.waiter.locked():
            self.waiter.release()


class SqliteWriter(Writer):
    """SQLite (WAL, a busy timeout): one writer at a time, so this process's writers
    queue on one lock, out of SQLite's busy handler (which sleeps in steps of up to
    100 ms), and combine their writes (group commit, :meth:`apply`). Reads of the hot
    path use a connection per thread (WAL readers never wait for the writer).

    The WAL is checkpointed by a thread of its own (``jobservice-sqlite-checkpoint``,
    every :data:`CHECKPOINT_EVERY_S` or after :data:`CHECKPOINT_AFTER_COMMITS`
    commits), never by a commit: SQLite's automatic checkpoint (off on this writer's
    connections) runs in the thread whose commit fills 1,000 pages of WAL and makes it
    wait for three ``fdatasync`` calls with the
    write lock held. A passive checkpoint takes no lock that a writer waits for, but
    a commit made while its file syncs run waits longer: a checkpoint that is due waits
    for a quiet moment (:data:`CHECKPOINT_QUIET_S` without a commit). The first commit
    after a whole checkpoint syncs the WAL's new header; the checkpoint thread makes
    that commit itself (:meth:`_restart_wal`)."""

    def __init__(self, url: str) -> None:
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 60},
            pool_size=16,
            max_overflow=64,
        )
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "begin", _sqlite_on_begin)
        super().__init__(engine, FileWatch(_database_file(engine)))
        self._lock = threading.Lock()
        self._queue: list[PendingWrite] = []
        self._queue_lock = threading.Lock()
        # One connection and one cursor serve every hot-path write, under the lock.
        self._conn: Any = None
        self._cursor: Any = None
        self._readers = threading.local()
        self._commits = 0
        self._checkpoint_due = threading.Event()
        self._closed = threading.Event()
        self._closing = False
        #: Checkpoints made so far, and WAL restarts made by the checkpoint thread.
        self.checkpoints = 0
        self.wal_restarts = 0
        self._checkpointer: threading.Thread | None = None

    def locked(self) -> AbstractContextManager[object]:
        """Holds the write lock that :meth:`apply` and every transaction take."""
        if self._checkpointer is None:
            self._start_checkpoints()
        return self._held()

    @contextmanager
    def _held(self) -> Iterator[None]:
        self._lock.acquire()
        try:
            yield
        finally:
            _then(self._let_go())

    def _let_go(self) -> list[PendingWrite]:
        """Commits what was queued meanwhile, then lets go of the write lock (which the
        caller holds) with the queue empty: a write queued by a thread that could not
        take the lock is never left behind. Returns the writes committed whose
        :attr:`PendingWrite.then` is to be called (by the caller, the lock let go)."""
        called: list[PendingWrite] = []
        while True:
            with self._queue_lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._lock.release()
                    return called
            try:
                self.commit_batch(batch)
            except Exception as exc:
                # None of it ran (no connection to the file, say): each write fails
                # with the reason, for its caller to say so or write again.
                for op in batch:
                    if not op.done:
                        op.error, op.done = exc, True
            except BaseException as exc:
                for op in batch:
                    if not op.done:
                        op.error, op.done = RuntimeError(f"write cut short: {exc!r}"), True
                    op.finished()
                self._lock.release()
                raise
            for op in batch:
                op.finished()
            called += [op for op in batch if op.then is not None]

    def _start_checkpoints(self) -> None:
        with self._queue_lock:
            if self._checkpointer is not None or self.file.path is None or self._closing:
                return
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="jobservice-sqlite-checkpoint", daemon=True
            )
            self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        """Runs in the checkpoint thread: a passive checkpoint whenever commits were
        made since the last one (SQLite skips the file syncs when nothing is new)."""
        conn: Any = None
        seen = -1
        try:
            while not self._closing:
                self._checkpoint_due.wait(CHECKPOINT_EVERY_S)
                self._checkpoint_due.clear()
                if self._closing:
                    break
                if self._commits == seen or not self._quiet():
                    continue
                commits = self._commits
                try:
                    if conn is None:
                        conn = self.engine.raw_connection()
                    db = conn.dbapi_connection
                    busy, frames, done = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    seen = commits
                    self.checkpoints += 1
                    if not busy and 0 < frames == done:
                        self._restart_wal(db)
                except Exception as exc:  # the next round tries again
                    logger.debug("sqlite checkpoint failed: {}", exc)
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.invalidate()
                        conn = None
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def _restart_wal(self, db: Any) -> None:
        """The WAL was checkpointed whole: the next commit starts it again from its
        beginning, and syncs its header first (a file sync, up to a millisecond here).
        A write that changes nothing (the database's ``user_version``, written back as
        it is) makes that commit here, in the quiet moment the checkpoint waited for,
        rather than in a job's."""
        with self._held():
            (version,) = db.execute("PRAGMA user_version").fetchone()
            db.execute(f"PRAGMA user_version = {int(version)}")
        self.wal_restarts += 1

    def _quiet(self) -> bool:
        """Waits until no commit came for :data:`CHECKPOINT_QUIET_S`, or
        :data:`CHECKPOINT_QUIET_MAX_S` passed; False when the writer closed meanwhile."""
        deadline = time.monotonic() + CHECKPOINT_QUIET_MAX_S
        commits = self._commits
        while not self._closed.wait(CHECKPOINT_QUIET_S):
            if self._commits == commits or time.monotonic() >= deadline:
                return True
            commits = self._commits
        return False

    @property
    def queued(self) -> int:
        """The number of writes waiting for the lock."""
        return len(self._queue)

    def apply(self, write: Callable[[Any], _R], *, atomic: bool = False) -> _R:
        """Writers combine: whoever holds the write lock runs every write queued so far
        (:meth:`commit_batch`) before it lets go, and the others wait for theirs to be
        done, not for the lock. A thread that took the lock only to find its write
        done would hold it while it waits for the GIL, and every writer behind it
        would wait too (a submit behind a worker's claim: 0.5 ms, 4 % of them)."""
        op = PendingWrite(write, atomic)
        with self._queue_lock:
            self._queue.append(op)
        if self._lock.acquire(blocking=False):
            _then(self._let_go())
        else:
            self._wait(op)
        if op.error is not None:
            raise op.error
        return op.result

    def _wait(self, op: PendingWrite) -> None:
        """Waits until ``op``, queued while another thread held the lock, is done: that
        thread, or the next to take the lock, commits it before it lets go. Should that
        thread have been cut short, this one takes the lock and commits what is left."""
        assert op.waiter is not None
        while not op.waiter.acquire(timeout=WAIT_CHECK_S):
            if self._lock.acquire(blocking=False):
                _then(self._let_go())

    def apply_soon(
        self, write: Callable[[Any], Any], then: Callable[[Any, BaseException | None], None]
    ) -> None:
        """Queues ``write`` (a single statement) without waiting for the write lock: with
        the lock free, this thread commits it and calls ``then(result, error)``; else
        the holder commits it before it lets go, and calls ``then``. A worker whose
        job's end waits behind a submit's insert goes on at once, and the two commit
        together."""
        op = PendingWrite(write, then=then)
        with self._queue_lock:
            self._queue.append(op)
        if self._lock.acquire(blocking=False):
            _then(self._let_go())

    def commit_batch(self, batch: list[PendingWrite]) -> None:
        """Runs ``batch`` under the write lock (the caller holds it): a few single
        statements (at most :data:`OWN_TRANSACTIONS_MAX`, none atomic) each in its own
        transaction, more in one ``BEGIN IMMEDIATE`` transaction where an atomic write
        runs within a savepoint. A write that fails is undone alone (SQLite undoes a
        failing statement, the savepoint a failing atomic write): the others stand."""
        if self._conn is None:
            self._conn = self.engine.raw_connection()
            self._cursor = self._conn.dbapi_connection.cursor()
            self._start_checkpoints()
        self._commits += 1
        if self._commits % CHECKPOINT_AFTER_COMMITS == 0:
            self._checkpoint_due.set()
        if len(batch) <= OWN_TRANSACTIONS_MAX and True not in [op.atomic for op in batch]:
            # In autocommit SQLite takes the write lock when a statement starts (waiting
            # as BEGIN IMMEDIATE would). Each statement the sqlite3 module runs lets go
            # of the GIL and waits to get it back, which costs more than a commit of a
            # small write: BEGIN and COMMIT would be two more of them.
            for op in batch:
                _run(op, self._cursor)
            return
        self._commit_together(batch)

    def _commit_together(self, batch: list[PendingWrite]) -> None:
        conn, cur = self._conn.dbapi_connection, self._cursor
        try:
            cur.execute("BEGIN IMMEDIATE")
            for op in batch:
                if not op.atomic:
                    _run(op, cur, done=False)
                    continue
                cur.execute("SAVEPOINT write")
                if not _run(op, cur, done=False):
                    cur.execute("ROLLBACK TO write")
                cur.execute("RELEASE write")
            cur.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                cur.execute("ROLLBACK")
            for op in batch:
                op.error = op.error or exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for op in batch:
                op.done = True

    def read_one(self, sql: str, params: dict[str, Any]) -> Any:
        """Reads on this thread's own connection."""
        cur: Any = getattr(self._readers, "cursor", None)
        if cur is None:
            self._readers.conn = self.engine.raw_connection()
            cur = self._readers.cursor = self._readers.conn.dbapi_connection.cursor()
        # fetchall steps the statement to its end, so no read stays open between calls.
        rows = cur.execute(sql, params).fetchall()
        return rows[0] if rows else None

    def check_writable(self, timeout_s: float) -> str | None:
        """The file is still the one opened, and ``BEGIN IMMEDIATE`` gets the write lock
        on a connection of its own within the timeout."""
        return sqlite_writable(self.file, timeout_s)

    def close(self) -> None:
        self._closing = True
        self._closed.set()
        self._checkpoint_due.set()
        if self._checkpointer is not None and self._checkpointer is not threading.current_thread():
            self._checkpointer.join(5.0)
        if self._conn is not None:
            self._cursor.close()
            self._conn.close()
            self._conn = self._cursor = None
        super().close()


def _then(ops: list[PendingWrite]) -> None:
    """Calls each committed write's ``then``; what one raises is logged."""
    for op in ops:
        assert op.then is not None
        try:
            op.then(op.result, op.error)
        except Exception as exc:
            logger.opt(exception=exc).error("after a write: {!r}", exc)


def _run(op: PendingWrite, cursor: Any, *, done: bool = True) -> bool:
    """Runs one write, keeping its result or error; True when it succeeded."""
    try:
        op.result = op.write(cursor)
        return True
    except Exception as exc:
        op.error = exc
        return False
    finally:
        if done:
            op.done = True


def _database_file(engine: Engine) -> str | None:
    """The absolute path of a SQLite database file, or None (memory, URIs)."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.abspath(database)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN
    # would be DEFERRED, whose lock upgrade fails at once instead of waiting).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # SqliteWriter's checkpoint thread checkpoints, not the commit that fills the WAL.
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # Transactions of the write engine are writes: take the lock at BEGIN, waiting.
    if conn.get_execution_options().get("jobservice_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")
