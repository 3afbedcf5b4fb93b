"""The only code that talks to the database.

Every status change is one guarded ``UPDATE … WHERE id = :id AND status IN (…)`` that
also sets ``update_time``; a change that matches no row raises
:class:`~model.errors.StatusConflict`. SQLite runs in WAL mode with a busy timeout and
writes start with ``BEGIN IMMEDIATE``, so concurrent worker threads wait for the lock
instead of failing with "database is locked".
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, SQLModel, select

from model.errors import NotFound, StatusConflict
from model.stamps import db_stamp, now_us
from model.status import Status
from model.tables import (
    JOB_TABLES,
    ImgScanOverview,
    Project,
    ReplicationPolicy,
    ReplicationTarget,
    ScanFinding,
    utcnow,
)

__all__ = ["ALLOWED_FROM", "Store"]

_T = TypeVar("_T", bound=SQLModel)
_R = TypeVar("_R")


class _Write:
    """One write waiting for the SQLite write lock (see :meth:`Store._apply`)."""

    __slots__ = ("atomic", "done", "error", "result", "write")

    def __init__(self, write: Callable[[Any], Any], atomic: bool) -> None:
        self.write = write
        self.atomic = atomic
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


#: For each status, the statuses a job may hold for the change to apply. A status
#: may be set again to itself where that is harmless (the claim sets ``running``
#: before the state machine does).
ALLOWED_FROM: dict[str, frozenset[str]] = {
    Status.RUNNING: frozenset({Status.PENDING, Status.RETRYING, Status.RUNNING}),
    Status.FINISHED: frozenset({Status.RUNNING}),
    Status.ERROR: frozenset({Status.PENDING, Status.RUNNING, Status.RETRYING}),
    Status.STOPPED: frozenset({Status.PENDING, Status.RUNNING, Status.RETRYING, Status.STOPPED}),
    Status.CANCELED: frozenset({Status.PENDING, Status.RUNNING, Status.RETRYING}),
    Status.RETRYING: frozenset({Status.RUNNING}),
    Status.PENDING: frozenset({Status.RUNNING, Status.PENDING}),
}

_SQLITE_BUSY_TIMEOUT_MS = 60_000
#: Seconds :meth:`Store.file_problem` answers from its last look at the file.
FILE_CHECK_INTERVAL_S = 1.0
#: Largest batch of single-statement writes that commit one by one (see Store._commit).
_OWN_TRANSACTIONS_MAX = 8
_CLAIMABLE = (Status.PENDING.value, Status.RETRYING.value)


def _table(name: str) -> sa.Table:
    return JOB_TABLES[name].__table__  # type: ignore[attr-defined]


class Store:
    """Database access for one service. Safe to share between threads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 60}
            kwargs["pool_size"] = 16
            kwargs["max_overflow"] = 64
        else:
            kwargs["pool_size"] = 8
            kwargs["max_overflow"] = 32
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = sa.create_engine(url, **kwargs)
        if self.is_sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_on_connect)
            sa.event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            sa.event.listen(self.engine, "connect", _postgres_on_connect)
        self._writer = self.engine.execution_options(jobservice_write=True)
        self._sqlite_conn: Any = None
        self._sqlite_cursor: Any = None
        self._queue: list[_Write] = []
        self._queue_lock = threading.Lock()
        self._readers = threading.local()
        self._sql_cache: dict[str, str] = {}
        self._status_sql: dict[tuple[str, str, bool, bool], str] = {}
        self._insert_sqls: dict[tuple[str, tuple[str, ...]], str] = {}
        self._write_lock: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if self.is_sqlite else contextlib.nullcontext()
        )

    # -- plumbing ------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        # SQLite allows one writer at a time; queueing this process's writers on a lock
        # keeps them out of SQLite's busy handler, which sleeps in steps of up to 100 ms.
        with self._write_lock, self._writer.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def session(self) -> Iterator[Session]:
        """An ORM session whose transaction commits on success (write lock on SQLite)."""
        with Session(self._writer) as session, session.begin():
            yield session

    def create_all(self) -> None:
        """Creates every table that does not exist yet."""
        SQLModel.metadata.create_all(self.engine)

    def close(self) -> None:
        """Closes every pooled connection."""
        if self._sqlite_conn is not None:
            self._sqlite_cursor.close()
            self._sqlite_conn.close()
            self._sqlite_conn = self._sqlite_cursor = None
        self.engine.dispose()

    # -- plain rows ------------------------------------------------------------------

    def add(self, row: _T) -> _T:
        """Inserts ``row`` and returns it with its id."""
        with self.session() as session:
            session.add(row)
            session.flush()
            session.refresh(row)
            session.expunge(row)
        return row

    def get(self, model: type[_T], ident: int) -> _T:
        """The row of ``model`` with ``ident``; raises :class:`NotFound`."""
        with Session(self.engine) as session:
            row = session.get(model, ident)
            if row is None:
                raise NotFound(model.__tablename__, ident)  # type: ignore[arg-type]
            session.expunge(row)
            return row

    def find(self, model: type[_T], ident: int) -> _T | None:
        """The row of ``model`` with ``ident``, or None."""
        with Session(self.engine) as session:
            row = session.get(model, ident)
            if row is not None:
                session.expunge(row)
            return row

    def list_rows(self, model: type[_T], **equal: Any) -> list[_T]:
        """Every row of ``model`` whose columns equal ``equal``, by id."""
        with Session(self.engine) as session:
            query = select(model)
            for column, value in equal.items():
                query = query.where(getattr(model, column) == value)
            rows = list(session.exec(query.order_by(model.id)))  # type: ignore[attr-defined]
            for row in rows:
                session.expunge(row)
            return rows

    def update(self, model: type[_T], ident: int, **values: Any) -> _T:
        """Sets ``values`` on one row (and ``update_time`` where it has one)."""
        with self.session() as session:
            row = session.get(model, ident)
            if row is None:
                raise NotFound(model.__tablename__, ident)  # type: ignore[arg-type]
            for column, value in values.items():
                setattr(row, column, value)
            if hasattr(row, "update_time"):
                row.update_time = utcnow()
            session.flush()
            session.refresh(row)
            session.expunge(row)
            return row

    def delete(self, model: type[_T], ident: int) -> None:
        """Deletes one row; raises :class:`NotFound`."""
        with self.session() as session:
            row = session.get(model, ident)
            if row is None:
                raise NotFound(model.__tablename__, ident)  # type: ignore[arg-type]
            session.delete(row)

    def policy_with_target(
        self, policy_id: int
    ) -> tuple[ReplicationPolicy, ReplicationTarget, Project]:
        """A policy with its target and project; raises :class:`NotFound` naming the missing one."""
        with Session(self.engine) as session:
            policy = session.get(ReplicationPolicy, policy_id)
            if policy is None or policy.deleted:
                raise NotFound("replication policy", policy_id)
            target = session.get(ReplicationTarget, policy.target_id)
            if target is None:
                raise NotFound("replication target", policy.target_id)
            project = session.get(Project, policy.project_id)
            if project is None:
                raise NotFound("project", policy.project_id)
            for row in (policy, target, project):
                session.expunge(row)
            return policy, target, project

    # -- jobs ------------------------------------------------------------------------

    def insert_jobs(self, table: str, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """Inserts pending jobs in one transaction and returns their ids in order."""
        _table(table)
        now = self._now()
        statements: list[tuple[str, dict[str, Any]]] = []
        for values in rows:
            columns = {
                "status": Status.PENDING.value,
                "attempts": 0,
                "creation_time": now,
                "update_time": now,
                **{k: _to_column(k, v) for k, v in values.items()},
            }
            statements.append((self._insert_sql(table, tuple(columns)), columns))

        def insert(cur: Any) -> list[int]:
            ids = []
            for sql, columns in statements:
                cur.execute(sql, columns)
                ids.append(int(cur.lastrowid if self.is_sqlite else cur.fetchall()[0][0]))
            return ids

        return self._apply(insert, atomic=len(statements) > 1)

    def _insert_sql(self, table: str, columns: tuple[str, ...]) -> str:
        key = (table, columns)
        cached = self._insert_sqls.get(key)
        if cached is None:
            names = ", ".join(columns)
            marks = ", ".join(f":{name}" for name in columns)
            # SQLite: the new id is the cursor's lastrowid, and a statement without a row
            # to return runs in one step (one release of the GIL instead of two).
            returning = "" if self.is_sqlite else " RETURNING id"
            cached = self._sql(f"INSERT INTO {table} ({names}) VALUES ({marks}){returning}")
            self._insert_sqls[key] = cached
        return cached

    def job(self, table: str, job_id: int) -> dict[str, Any]:
        """The row of one job; raises :class:`NotFound`."""
        t = _table(table)
        with self._read() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == job_id)).mappings().first()
        if row is None:
            raise NotFound(f"{table}", job_id)
        return dict(row)

    def status(self, table: str, job_id: int) -> str:
        """The status of one job; raises :class:`NotFound`."""
        _table(table)
        found = self._read_one(f"SELECT status FROM {table} WHERE id = :id", {"id": job_id})
        if found is None:
            raise NotFound(f"{table}", job_id)
        return str(found[0])

    def set_status(
        self,
        table: str,
        job_id: int,
        status: str,
        *,
        next_attempt_at: datetime | None = None,
        count_attempt: bool = False,
    ) -> None:
        """Changes a job's status with one guarded UPDATE (see :data:`ALLOWED_FROM`) that
        also sets ``update_time`` (and ``next_attempt_at``, and counts an attempt, when
        asked). Raises :class:`StatusConflict` when the job does not exist or may not
        take ``status``."""
        params: dict[str, Any] = {"id": job_id, "status": status, "now": self._now()}
        if next_attempt_at is not None:
            params["due"] = self._db_time(next_attempt_at)
        sql = self._set_status_sql(table, status, next_attempt_at is not None, count_attempt)
        if self._apply(lambda cur: cur.execute(sql, params).rowcount) == 1:
            return
        found = self._read_one(f"SELECT status FROM {table} WHERE id = :id", {"id": job_id})
        raise StatusConflict(table, job_id, status, str(found[0]) if found else None)

    def _set_status_sql(self, table: str, status: str, due: bool, count_attempt: bool) -> str:
        key = (table, status, due, count_attempt)
        cached = self._status_sql.get(key)
        if cached is not None:
            return cached
        _table(table)
        sets = "status = :status, update_time = :now"
        if due:
            sets += ", next_attempt_at = :due"
        if count_attempt:
            sets += ", attempts = attempts + 1"
        guard = ", ".join(f"'{a}'" for a in sorted(ALLOWED_FROM[status]))
        sql = self._sql(f"UPDATE {table} SET {sets} WHERE id = :id AND status IN ({guard})")
        self._status_sql[key] = sql
        return sql

    def claim(self, table: str, kind: str | None = None) -> dict[str, Any] | None:
        """Takes the oldest due job and sets it ``running``; returns its row or None."""
        rows = self.claim_many(table, kind, 1)
        return rows[0] if rows else None

    def claim_many(
        self, table: str, kind: str | None = None, limit: int = 1
    ) -> list[dict[str, Any]]:
        """Takes up to ``limit`` of the oldest due jobs (pending, or retrying whose time
        has come), sets them ``running`` and returns their rows, oldest first.

        The UPDATE is guarded on the claimable statuses, so of two claimants only one
        wins a job (PostgreSQL: the pick skips rows another claimant has locked). The
        pick is a materialized CTE, run once: a ``WHERE id IN (SELECT … LIMIT n)`` may
        be planned as a join that runs the subquery again for each row, and with
        ``SKIP LOCKED`` each run picks other rows, so such a claim took many more
        than ``n`` jobs.
        """
        _table(table)
        scope = "AND kind = :kind " if kind is not None else ""
        lock = "" if self.is_sqlite else " FOR UPDATE SKIP LOCKED"
        claimable = ", ".join(f"'{s}'" for s in _CLAIMABLE)
        sql = self._sql(
            f"WITH picked AS MATERIALIZED (SELECT id FROM {table} "
            f"WHERE status IN ({claimable}) "
            f"AND (status = 'pending' OR next_attempt_at <= :now) {scope}"
            f"ORDER BY id LIMIT :limit{lock}) "
            f"UPDATE {table} SET status = 'running', update_time = :now "
            f"WHERE id IN (SELECT id FROM picked) AND status IN ({claimable}) RETURNING *"
        )
        params: dict[str, Any] = {"now": self._now(), "kind": kind, "limit": limit}

        def claim(cur: Any) -> list[dict[str, Any]]:
            cur.execute(sql, params)
            found = cur.fetchall()
            names = [d[0] for d in cur.description] if found else []
            return [dict(zip(names, values, strict=True)) for values in found]

        rows = [_from_columns(row) for row in self._apply(claim)]
        rows.sort(key=lambda row: int(row["id"]))
        return rows

    def schedule_retry(
        self, table: str, job_id: int, delay_s: float, count_attempt: bool = True
    ) -> datetime:
        """Sets a running job ``retrying``, due in ``delay_s`` seconds, one more attempt
        counted when ``count_attempt``. Returns the due time."""
        due = utcnow() + timedelta(seconds=delay_s)
        self.set_status(
            table, job_id, Status.RETRYING, next_attempt_at=due, count_attempt=count_attempt
        )
        return due

    # -- the hot path: plain DBAPI statements (SQLAlchemy's per-statement cost is ~5x SQLite's)

    def _apply(self, write: Callable[[Any], _R], *, atomic: bool = False) -> _R:
        """Runs ``write(cursor)`` in a write transaction and returns what it returns.

        On SQLite, writers combine: whoever holds the write lock runs every write
        queued so far (a burst of more than a few in one transaction), and the others
        find theirs done when they get the lock. One lock hand-off serves a burst of
        writers, where a lock per write would make them queue behind each other's GIL
        waits. ``atomic``: the write runs several statements that must stand or fall
        together.
        """
        if not self.is_sqlite:
            pg = self.engine.raw_connection()
            try:
                result = write(pg.cursor())
                pg.commit()
                return result
            except BaseException:
                pg.rollback()
                raise
            finally:
                pg.close()
        op = _Write(write, atomic)
        with self._queue_lock:
            self._queue.append(op)
        with self._write_lock:
            if not op.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        if op.error is not None:
            raise op.error
        return op.result

    def _commit(self, batch: list[_Write]) -> None:
        # One connection and one cursor serve every write, under the write lock.
        if self._sqlite_conn is None:
            self._sqlite_conn = self.engine.raw_connection()
            self._sqlite_cursor = self._sqlite_conn.dbapi_connection.cursor()
        conn, cur = self._sqlite_conn.dbapi_connection, self._sqlite_cursor
        if len(batch) <= _OWN_TRANSACTIONS_MAX and not any(op.atomic for op in batch):
            # A few single statements run each in its own transaction: in autocommit
            # SQLite takes the write lock when a statement starts (waiting as BEGIN
            # IMMEDIATE would). Each statement the sqlite3 module runs lets go of the
            # GIL and waits to get it back, which costs more than a commit of a small
            # write: BEGIN and COMMIT would be two more of them.
            for op in batch:
                try:
                    op.result = op.write(cur)
                except Exception as exc:
                    op.error = exc
                finally:
                    op.done = True
            return
        try:
            cur.execute("BEGIN IMMEDIATE")
            for op in batch:
                # A failing statement is undone by SQLite alone; a failing write of
                # several statements is undone to its savepoint. Either way the other
                # writes of the batch stand.
                if op.atomic:
                    cur.execute("SAVEPOINT write")
                try:
                    op.result = op.write(cur)
                except Exception as exc:
                    op.error = exc
                    if op.atomic:
                        cur.execute("ROLLBACK TO write")
                if op.atomic:
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

    def _read_one(self, sql: str, params: dict[str, Any]) -> Any:
        """The first row of a read, on this thread's own connection (SQLite: WAL readers
        never wait for the writer)."""
        if not self.is_sqlite:
            with self._read() as conn:
                return conn.exec_driver_sql(self._sql(sql), params).first()
        cur: Any = getattr(self._readers, "cursor", None)
        if cur is None:
            self._readers.conn = self.engine.raw_connection()
            cur = self._readers.cursor = self._readers.conn.dbapi_connection.cursor()
        # fetchall steps the statement to its end, so no read stays open between calls.
        rows = cur.execute(sql, params).fetchall()
        return rows[0] if rows else None

    def _sql(self, text: str) -> str:
        cached = self._sql_cache.get(text)
        if cached is None:
            cached = text if self.is_sqlite else re.sub(r":(\w+)", r"%(\1)s", text)
            self._sql_cache[text] = cached
        return cached

    def _now(self) -> Any:
        return db_stamp(now_us()) if self.is_sqlite else self._db_time(utcnow())

    def _db_time(self, value: datetime) -> Any:
        # The stored form of SQLAlchemy's DateTime: naive UTC, as text on SQLite.
        naive = value.astimezone(UTC).replace(tzinfo=None)
        return naive.isoformat(" ", "microseconds") if self.is_sqlite else naive

    def requeue_running(self) -> int:
        """Start-up: every ``running`` job (its process is gone) becomes ``pending``."""
        count = 0
        with self._write() as conn:
            for name in JOB_TABLES:
                t = _table(name)
                count += conn.execute(
                    t.update()
                    .where(t.c.status == Status.RUNNING.value)
                    .values(status=Status.PENDING.value, update_time=utcnow())
                ).rowcount
        return count

    def stop_waiting(self, table: str, **equal: Any) -> list[int]:
        """Sets every pending or retrying job whose columns equal ``equal`` to ``stopped``;
        returns their ids."""
        t = _table(table)
        where = [t.c.status.in_(_CLAIMABLE)] + [t.c[k] == v for k, v in equal.items()]
        with self._write() as conn:
            ids = [
                int(r)
                for r in conn.execute(
                    t.update()
                    .where(*where)
                    .values(status=Status.STOPPED.value, update_time=utcnow())
                    .returning(t.c.id)
                ).scalars()
            ]
        return ids

    def job_ids(self, table: str, statuses: Iterable[str], **equal: Any) -> list[int]:
        """Ids of the jobs in ``statuses`` whose columns equal ``equal``."""
        t = _table(table)
        query = sa.select(t.c.id).where(t.c.status.in_(list(statuses)))
        for column, value in equal.items():
            query = query.where(t.c[column] == value)
        with self._read() as conn:
            return [int(i) for i in conn.execute(query.order_by(t.c.id)).scalars()]

    def earliest_retry(self, after: datetime) -> datetime | None:
        """The earliest due time later than ``after`` of any ``retrying`` job, or None.

        Jobs already due are left out: pools take them as soon as a worker is free."""
        earliest: datetime | None = None
        with self._read() as conn:
            for name in JOB_TABLES:
                t = _table(name)
                value = conn.execute(
                    sa.select(sa.func.min(t.c.next_attempt_at)).where(
                        t.c.status == Status.RETRYING.value, t.c.next_attempt_at > after
                    )
                ).scalar()
                if value is not None:
                    value = _aware(value)
                    if earliest is None or value < earliest:
                        earliest = value
        return earliest

    def queue_counts(self, table: str, kind: str | None = None) -> tuple[int, int]:
        """(queued, delayed): jobs a worker could take now, and retrying jobs not yet due."""
        t = _table(table)
        now = utcnow()
        queued = sa.func.sum(
            sa.case(
                (t.c.status == Status.PENDING.value, 1),
                (sa.and_(t.c.status == Status.RETRYING.value, t.c.next_attempt_at <= now), 1),
                else_=0,
            )
        )
        delayed = sa.func.sum(
            sa.case(
                (sa.and_(t.c.status == Status.RETRYING.value, t.c.next_attempt_at > now), 1),
                else_=0,
            )
        )
        query = sa.select(queued, delayed).where(t.c.status.in_(_CLAIMABLE))
        if kind is not None:
            query = query.where(t.c.kind == kind)
        with self._read() as conn:
            row = conn.execute(query).one()
        return int(row[0] or 0), int(row[1] or 0)

    def status_counts(self, table: str, kind: str | None = None) -> dict[str, int]:
        """Number of jobs per status."""
        t = _table(table)
        query = sa.select(t.c.status, sa.func.count()).group_by(t.c.status)
        if kind is not None:
            query = query.where(t.c.kind == kind)
        with self._read() as conn:
            return {str(s): int(n) for s, n in conn.execute(query)}

    # -- scan results ----------------------------------------------------------------

    def save_scan_result(
        self,
        overview: ImgScanOverview,
        findings: Sequence[ScanFinding],
    ) -> None:
        """Upserts the overview of an image by digest and replaces its findings, in one
        transaction."""
        o = ImgScanOverview.__table__  # type: ignore[attr-defined]
        f = ScanFinding.__table__  # type: ignore[attr-defined]
        now = utcnow()
        with self._write() as conn:
            updated = conn.execute(
                o.update()
                .where(o.c.image_digest == overview.image_digest)
                .values(
                    scan_job_id=overview.scan_job_id,
                    severity=overview.severity,
                    components_overview=overview.components_overview,
                    details_key=overview.details_key,
                    update_time=now,
                )
            ).rowcount
            if not updated:
                conn.execute(
                    o.insert().values(
                        image_digest=overview.image_digest,
                        scan_job_id=overview.scan_job_id,
                        severity=overview.severity,
                        components_overview=overview.components_overview,
                        details_key=overview.details_key,
                        creation_time=now,
                        update_time=now,
                    )
                )
            conn.execute(f.delete().where(f.c.image_digest == overview.image_digest))
            if findings:
                conn.execute(
                    f.insert(),
                    [finding.model_dump(exclude={"id"}) for finding in findings],
                )

    # -- health: is the database still the one opened, and can it take a write? -------

    #: The SQLite file :meth:`remember_file` saw: its path and (st_dev, st_ino).
    _file_path: str | None = None
    _file_identity: tuple[int, int] = (0, 0)
    #: When :meth:`file_problem` last looked (monotonic seconds), and what it found.
    _file_seen_at = 0.0
    _file_answer: str | None = None

    def remember_file(self) -> None:
        """SQLite: notes which file the database is (its device and inode), so that
        :meth:`file_problem` can tell when it is deleted or replaced under the service.
        Called once the database is open; does nothing for other databases."""
        path = self._database_file()
        if path is None:
            return
        found = os.stat(path)
        self._file_path = path
        self._file_identity = (found.st_dev, found.st_ino)
        self._file_seen_at = time.monotonic()
        self._file_answer = None

    def file_problem(self, max_age_s: float = FILE_CHECK_INTERVAL_S) -> str | None:
        """Why the SQLite file at the database's path is no longer the one
        :meth:`remember_file` saw (deleted, or another file in its place), or None.

        Stats the path at most once per ``max_age_s`` seconds and answers the last
        finding in between, so that a caller may ask on every request. Writes after a
        deletion or replacement land in the old file, which nothing will read again.
        """
        path = self._file_path
        if path is None:
            return None
        now = time.monotonic()
        if now - self._file_seen_at < max_age_s:
            return self._file_answer
        try:
            found = os.stat(path)
        except FileNotFoundError:
            answer: str | None = f"the database file {path} was deleted while the service ran"
        except OSError as exc:
            answer = f"the database file {path} cannot be read: {exc.strerror}"
        else:
            answer = None
            if (found.st_dev, found.st_ino) != self._file_identity:
                answer = (
                    f"the database file {path} was replaced while the service ran "
                    "(another file is at its path now)"
                )
        self._file_answer = answer
        self._file_seen_at = now
        return answer

    def check_writable(self, timeout_s: float = 1.0) -> str | None:
        """Why a write could not start now, or None; waits at most about ``timeout_s``.

        SQLite: the file is still the one opened, and ``BEGIN IMMEDIATE`` (then
        ``ROLLBACK``) gets the write lock on a connection of its own within the timeout.
        PostgreSQL: a new connection (connect and statement timeouts) answers and its
        transactions are not read-only (a standby, ``default_transaction_read_only``).
        The answer names the cause, never a password.
        """
        if self.is_sqlite:
            return self._sqlite_writable(timeout_s)
        return self._server_writable(timeout_s)

    def _sqlite_writable(self, timeout_s: float) -> str | None:
        path = self._file_path
        if path is None:
            return None  # in memory: always this process's
        problem = self.file_problem(max_age_s=0)
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

    def _server_writable(self, timeout_s: float) -> str | None:
        dialect = self.engine.dialect
        cargs, cparams = dialect.create_connect_args(self.engine.url)
        statement_timeout = f"-c statement_timeout={max(int(timeout_s * 1000), 1)}"
        options = f"{cparams.get('options', '')} {statement_timeout}".strip()
        where = self.engine.url.render_as_string(hide_password=True)
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

    def _database_file(self) -> str | None:
        """The absolute path of a SQLite database file, or None (memory, URIs, servers)."""
        if not self.is_sqlite:
            return None
        database = self.engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return os.path.abspath(database)

    def count_encrypted_passwords(self) -> int:
        """The number of targets whose stored password is encrypted (``<enc-…>``), and so
        can only be read with the key it was encrypted with."""
        t = ReplicationTarget.__table__  # type: ignore[attr-defined]
        query = sa.select(sa.func.count()).where(t.c.password.like("<enc-%"))
        with self._read() as conn:
            return int(conn.execute(query).scalar() or 0)


def _first_line(exc: BaseException) -> str:
    """An error's first line, short: driver messages go on with hints and context."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _to_column(name: str, value: Any) -> Any:
    if name == "tags":
        return ",".join(value)
    if name == "params" and not isinstance(value, str):  # a str is JSON text already
        return json.dumps(value, sort_keys=True)
    return value


def _from_columns(row: dict[str, Any]) -> dict[str, Any]:
    if "tags" in row:
        row["tags"] = [t for t in (row["tags"] or "").split(",") if t]
    if "params" in row:
        text = row["params"]
        row["params"] = json.loads(text) if text and text != "{}" else {}
    for name in ("creation_time", "update_time", "next_attempt_at"):
        value = row.get(name)
        if isinstance(value, str):
            row[name] = datetime.fromisoformat(value).replace(tzinfo=UTC)
        elif isinstance(value, datetime) and value.tzinfo is None:
            row[name] = value.replace(tzinfo=UTC)
    return row


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN
    # would be DEFERRED, whose lock upgrade fails at once instead of waiting).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _postgres_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Times are written as naive UTC on the hot path: read them as UTC whatever the
    # server's time zone.
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.commit()


def _sqlite_on_begin(conn: Connection) -> None:
    if conn.get_execution_options().get("jobservice_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")
