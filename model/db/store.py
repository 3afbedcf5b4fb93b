"""The store: the only class that talks to the database (see :class:`Store`).

Every status change is one guarded ``UPDATE … WHERE id = :id AND status IN (…)`` that
also sets ``update_time``; a change that matches no row raises
:class:`~model.errors.StatusConflict`. The engine's writes and its status read are plain
DBAPI statements (:mod:`model.db._sql`) run by the dialect's writer
(:mod:`model.db._writer`: on SQLite, WAL, a busy timeout and one write lock of this
process, small batches in autocommit and larger ones in a ``BEGIN IMMEDIATE``
transaction; :mod:`model.db._mysql` on MySQL); rows and reads off the hot path go
through SQLModel and SQLAlchemy Core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from model.db._claims import Claims
from model.db._health import FILE_CHECK_INTERVAL_S
from model.db._open import open_writer
from model.db._plain import PlainRows
from model.db._reads import JobReads
from model.db._rows import from_columns as _from_columns
from model.db._rows import new_row as _new_row
from model.db._scans import ScanResults
from model.db._sql import ALLOWED_FROM, Guard, dialect_of, statements_for
from model.db._statistics import analyze_unseen
from model.db.nodes import CHANNEL, Nodes, node_channel
from model.db.tables import (
    JOB_TABLES,
    ReplicationTarget,
    utcnow,
)
from model.errors import ConfigError, InvalidRequest, NotFound, StatusConflict
from model.status import Status

__all__ = ["ALLOWED_FROM", "Store"]

_T = TypeVar("_T", bound=SQLModel)


class Store(JobReads, PlainRows, ScanResults, Claims):
    """Database access for one service, at the SQLAlchemy ``url`` (SQLite, PostgreSQL
    or MySQL/MariaDB). Safe to share between threads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sql = statements_for(dialect_of(url))
        self._writer = open_writer(url)
        #: The engine every connection comes from.
        self.engine: Engine = self._writer.engine
        #: The node this store works for (see :class:`~model.db.nodes.Nodes`): its claims
        #: record it, and its status changes apply only to jobs it claimed (or none
        #: did). None: a store of no node (tools, tests), which fences nothing.
        self.node: int | None = None
        #: Whether other live nodes share the database (PostgreSQL): submits then
        #: notify them (see :meth:`insert_jobs`).
        self.notify_others = False
        #: The kinds whose pools run in this process: work of theirs queued here is not
        #: told to other nodes; the local pool, woken directly, tells them when it
        #: cannot take it all.
        self.local_kinds: frozenset[str] = frozenset()
        #: Whether :meth:`end_and_claim` is one statement (PostgreSQL: one round trip
        #: where two calls make two).
        self.ends_with_claims = self._sql.dialect == "postgresql"
        #: The ``node`` table and the statements that span nodes.
        self.nodes = Nodes(self._writer, self._sql.dialect)

    # -- plumbing ------------------------------------------------------------------

    @contextmanager
    def session(self) -> Iterator[Session]:
        """An ORM session whose transaction commits on success; it holds the write lock
        that every other write takes (SQLite)."""
        with self._writer.session() as session:
            yield session

    def create_all(self) -> None:
        """Creates every table that does not exist yet; raises :class:`ConfigError`
        when a table lacks a column of this version (a database made by an older
        one, which ``jobservice db upgrade`` brings up to date)."""
        SQLModel.metadata.create_all(self.engine)
        inspector = sa.inspect(self.engine)
        for name, table in SQLModel.metadata.tables.items():
            have = {column["name"] for column in inspector.get_columns(name)}
            missing = sorted(set(table.c.keys()) - have)
            if missing:
                raise ConfigError(
                    "database_url",
                    f"table {name} lacks the columns {', '.join(missing)} of this "
                    "jobservice: run `jobservice db upgrade`",
                )

    def analyze_unseen(self) -> list[str]:
        """PostgreSQL: analyzes the large job tables that have no planner statistics
        (see :mod:`model.db._statistics`); returns their names."""
        return analyze_unseen(self.engine)

    def close(self) -> None:
        """Closes every pooled connection."""
        self._writer.close()

    # -- jobs: plain DBAPI statements (:mod:`model.db._sql`) run by the writer ----------
    # insert_jobs, status, set_status and claim_many are the engine's hot path, where
    # SQLAlchemy's cost per statement would be several times SQLite's own.

    def insert_jobs(
        self, table: str, rows: Sequence[Mapping[str, Any]], wake: str | None = None
    ) -> list[int]:
        """Inserts pending jobs in one transaction and returns their ids in order.

        ``wake``: the kind's name, told to other nodes (PostgreSQL's ``NOTIFY``, in the
        same transaction; see :meth:`_wake_notices`) when :attr:`notify_others` says
        there are any."""
        found = self.queue([(table, rows, wake)])
        assert found is not None
        return found[0]

    def queue(
        self,
        batches: Sequence[tuple[str, Sequence[Mapping[str, Any]], str | None]],
        guard: tuple[Guard, Mapping[str, Any]] | None = None,
    ) -> list[list[int]] | None:
        """Inserts pending jobs of several tables in one transaction: each batch is
        (table, rows, the kind to wake on other nodes or None). Returns the ids of each
        batch, in order.

        ``guard``: a :class:`Guard` and its parameters (``:now`` is given), run first
        in the same transaction; when it changes no row nothing is written and the
        answer is None (another node fired the schedule, the event was seen already)."""
        sql = self._sql
        now = sql.now()
        statements: list[list[tuple[str, dict[str, Any]]]] = []
        for table, rows, _ in batches:
            texts = []
            for values in rows:
                columns = _new_row(values, Status.PENDING, now)
                texts.append((sql.insert(table, tuple(columns)), columns))
            statements.append(texts)
        notices = self._wake_notices(sorted({w for _, rows, w in batches if w and rows}))
        guarded = None if guard is None else (sql.text(guard[0]), {"now": now, **guard[1]})

        if len(notices) == 1 and guard is None and [len(texts) for texts in statements] == [1]:
            # One job, told to the other nodes: one statement, one round trip.
            ((text, columns),) = statements[0]
            combined = sql.with_notify(text)
            ((channel, notice),) = notices
            payload = {"channel": channel, "payload": notice, **columns}
            return [
                [self._writer.apply(lambda cur: int(cur.execute(combined, payload).fetchone()[0]))]
            ]

        def insert(cur: Any) -> list[list[int]] | None:
            if guarded is not None and cur.execute(*guarded).rowcount != 1:
                return None
            ids = []
            for texts in statements:
                batch = []
                for text, columns in texts:
                    cur.execute(text, columns)
                    batch.append(sql.inserted_id(cur))
                ids.append(batch)
            for channel, notice in notices:
                cur.execute(
                    "SELECT pg_notify(%(channel)s, %(payload)s)",
                    {"channel": channel, "payload": notice},
                )
            return ids

        several = sum(len(texts) for texts in statements) > 1
        return self._writer.apply(insert, atomic=several or bool(notices) or guard is not None)

    def insert_running(self, table: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Inserts one job ``running`` on :attr:`node`, as a claim leaves it (a job
        handed straight to an idle worker, see ``actors.handoff``), in one statement;
        returns its row as a claim would (``values`` name every column of the kind)."""
        sql = self._sql
        now, read = sql.now_as_read()
        columns = {**_new_row(values, Status.RUNNING, now), "node_id": self.node}
        text = sql.insert(table, tuple(columns))

        def insert(cur: Any) -> int:
            cur.execute(text, columns)
            return int(sql.inserted_id(cur))

        job_id = self._writer.apply(insert)
        return _from_columns(
            {
                **columns,
                "id": job_id,
                "next_attempt_at": None,
                "stop_requested": False,
                "creation_time": read,
                "update_time": read,
            }
        )

    def _wake_notices(self, kinds: list[str]) -> list[tuple[str, str]]:
        """(channel, payload) of each notification telling nodes of work of ``kinds``
        just queued here (see :mod:`model.db.nodes`): none for a kind whose pool runs
        here; from a store of no node, one to the live node it wakes; else one to every
        node."""
        if not (kinds and self.notify_others and self._sql.notifies):
            return []
        kinds = [kind for kind in kinds if kind not in self.local_kinds]
        target = self.nodes.wake_target() if self.node is None and kinds else None
        if target is None:
            return [(CHANNEL, f"wake {kind} {self.node}") for kind in kinds]
        return [(node_channel(target), f"wake {kind} {self.node} pass") for kind in kinds]

    def sql_time(self, value: datetime) -> Any:
        """``value`` as this database stores it, for a statement's parameter."""
        return self._sql.time(value)

    def status(self, table: str, job_id: int) -> str:
        """The status of one job; raises :class:`NotFound`."""
        found = self._writer.read_one(self._sql.status(table), {"id": job_id})
        if found is None:
            raise NotFound(f"{table}", job_id)
        return str(found[0])

    def set_statuses(
        self, table: str, job_ids: list[int], status: str, *, count_attempt: bool = False
    ) -> set[int]:
        """:meth:`set_status` of several jobs in one statement, each guarded as one;
        returns the ids it changed. MySQL cannot say which rows changed: when any was
        refused it reports none (those allowed did change), for each to be written
        alone. Raises what the database raised."""
        sql = self._sql
        node = self.node
        text = sql.set_statuses(table, status, count_attempt, node is not None)
        params = {"ids": sql.ids(job_ids), "status": status, "now": sql.now(), "node": node}

        def write(cur: Any) -> set[int]:
            cur.execute(text, params)
            if sql.in_steps:
                return set(job_ids) if cur.rowcount == len(job_ids) else set()
            return {int(row[0]) for row in cur.fetchall()}

        return self._writer.apply(write)

    def has_due(self, table: str, kind: str | None = None) -> bool:
        """Whether a job (of ``kind``) is due: pending, or retrying with its time come.
        A read, where :meth:`claim_many` is a write."""
        params = {"now": self._sql.now(), "kind": kind}
        return self._writer.read_one(self._sql.due(table, kind is not None), params) is not None

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
        asked). Raises :class:`StatusConflict` when the job does not exist, may not
        take ``status``, or was claimed by another node than :attr:`node`."""
        text, params = self._status_write(table, job_id, status, next_attempt_at, count_attempt)
        if self._writer.apply(lambda cur: cur.execute(text, params).rowcount) != 1:
            raise self._conflict(table, job_id, status)

    def set_status_soon(
        self,
        table: str,
        job_id: int,
        status: str,
        then: Callable[[BaseException | None], None],
        *,
        count_attempt: bool = False,
    ) -> None:
        """:meth:`set_status` that does not wait for SQLite's write lock held by another
        thread (see :meth:`SqliteWriter.apply_soon`): ``then(None)`` once it landed,
        ``then(error)`` if not, in the thread that committed it."""
        text, params = self._status_write(table, job_id, status, None, count_attempt)

        def landed(rowcount: Any, error: BaseException | None) -> None:
            if error is None and rowcount != 1:
                error = self._conflict(table, job_id, status)
            then(error)

        self._writer.apply_soon(lambda cur: cur.execute(text, params).rowcount, landed)

    def _status_write(
        self,
        table: str,
        job_id: int,
        status: str,
        next_attempt_at: datetime | None,
        count_attempt: bool,
    ) -> tuple[str, dict[str, Any]]:
        sql = self._sql
        node = self.node
        params: dict[str, Any] = {"id": job_id, "status": status, "now": sql.now(), "node": node}
        if next_attempt_at is not None:
            params["due"] = sql.time(next_attempt_at)
        text = sql.set_status(
            table, status, next_attempt_at is not None, count_attempt, node is not None
        )
        return text, params

    def _conflict(self, table: str, job_id: int, status: str) -> StatusConflict:
        found = self._writer.read_one(self._sql.status(table), {"id": job_id})
        return StatusConflict(table, job_id, status, str(found[0]) if found else None)

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

    def stop_waiting(self, table: str, **equal: Any) -> list[int]:
        """Sets every pending or retrying job whose columns equal ``equal`` to ``stopped``;
        returns their ids. Raises :class:`InvalidRequest` for a column ``table`` lacks."""
        columns = JOB_TABLES[table].__table__.c  # type: ignore[attr-defined]
        for name in equal:
            if name not in columns:
                raise InvalidRequest(name, f"{table} has no column {name!r}")
        params = {"now": self._sql.now(), **{f"eq_{k}": v for k, v in equal.items()}}
        if self._sql.in_steps:
            steps = self._sql.stop_waiting_steps(table, tuple(equal))

            def stop_in_steps(cur: Any) -> list[int]:
                ids = tuple(int(row[0]) for row in cur.execute(steps.pick, params).fetchall())
                if ids:
                    cur.execute(steps.take, {**params, "ids": ids})
                return list(ids)

            return self._writer.apply(stop_in_steps, atomic=True)
        text = self._sql.stop_waiting(table, tuple(equal))

        def stop(cur: Any) -> list[int]:
            return [int(row[0]) for row in cur.execute(text, params).fetchall()]

        return self._writer.apply(stop)

    # -- health: is the database still the one opened, and can it take a write? -------

    def remember_file(self) -> None:
        """SQLite: notes which file the database is (its device and inode), so that
        :meth:`file_problem` can tell when it is deleted or replaced under the service.
        Called once the database is open; does nothing for other databases."""
        self._writer.file.remember()

    def file_problem(self, max_age_s: float = FILE_CHECK_INTERVAL_S) -> str | None:
        """Why the SQLite file at the database's path is no longer the one
        :meth:`remember_file` saw (deleted, or another file in its place), or None.

        Stats the path at most once per ``max_age_s`` seconds and answers the last
        finding in between, so that a caller may ask on every request. Writes after a
        deletion or replacement land in the old file, which nothing will read again.
        """
        return self._writer.file.problem(max_age_s)

    def check_writable(self, timeout_s: float = 1.0) -> str | None:
        """Why a write could not start now, or None; waits at most about ``timeout_s``.

        SQLite: the file is still the one opened, and ``BEGIN IMMEDIATE`` (then
        ``ROLLBACK``) gets the write lock on a connection of its own within the timeout.
        PostgreSQL: a new connection (connect and statement timeouts) answers and its
        transactions are not read-only (a standby, ``default_transaction_read_only``).
        MySQL: a new connection answers and neither the server nor its transactions
        are read-only (a replica, ``read_only``).
        The answer names the cause, never a password.
        """
        return self._writer.check_writable(timeout_s)

    def count_encrypted_passwords(self) -> int:
        """The number of targets whose stored password is encrypted (``<enc-…>``), and so
        can only be read with the key it was encrypted with."""
        t = ReplicationTarget.__table__  # type: ignore[attr-defined]
        query = sa.select(sa.func.count()).where(t.c.password.like("<enc-%"))
        with self._read() as conn:
            return int(conn.execute(query).scalar() or 0)
