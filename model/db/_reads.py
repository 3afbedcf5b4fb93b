"""Reads of the job tables off the engine's hot path, in SQLAlchemy Core: one job's row,
ids by status, and counts; and the reads of every poll (the next due retry or
schedule, whether a schedule is due), plain statements on the hot path's reader (see
:class:`JobReads`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from model.db._sql import Statements
from model.db._writer import Writer
from model.db.tables import JOB_TABLES, utcnow
from model.errors import NotFound
from model.stamps import aware
from model.status import CLAIMABLE, Status

__all__ = ["JobReads", "job_table"]


#: The earliest time after ``:after`` at which a retry falls due (in any job table) or
#: an enabled schedule (``:yes``) fires.
_NEXT_DUE = "SELECT min(due) FROM ({}) AS due_times".format(
    " UNION ALL ".join(
        [
            *(
                f"SELECT min(next_attempt_at) AS due FROM {table} "
                f"WHERE status = '{Status.RETRYING.value}' AND next_attempt_at > :after"
                for table in JOB_TABLES
            ),
            "SELECT min(next_fire_at) AS due FROM schedule "
            "WHERE enabled = :yes AND next_fire_at > :after",
        ]
    )
)
#: Whether an enabled schedule's fire time (``:now``) has come.
_SCHEDULE_DUE = "SELECT 1 FROM schedule WHERE enabled = :yes AND next_fire_at <= :now LIMIT 1"


def job_table(name: str) -> sa.Table:
    """The job table named ``name`` (a key of :data:`~model.db.tables.JOB_TABLES`)."""
    return JOB_TABLES[name].__table__  # type: ignore[attr-defined]


class JobReads:
    """The reads of :class:`~model.db.store.Store` that the engine's hot path does not
    make, each on a pooled connection of :attr:`engine`."""

    engine: Engine
    _writer: Writer
    _sql: Statements

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def job(self, table: str, job_id: int) -> dict[str, Any]:
        """The row of one job; raises :class:`NotFound`."""
        t = job_table(table)
        with self._read() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == job_id)).mappings().first()
        if row is None:
            raise NotFound(f"{table}", job_id)
        return dict(row)

    def job_ids(self, table: str, statuses: Iterable[str], **equal: Any) -> list[int]:
        """Ids of the jobs in ``statuses`` whose columns equal ``equal``."""
        t = job_table(table)
        query = sa.select(t.c.id).where(t.c.status.in_(list(statuses)))
        for column, value in equal.items():
            query = query.where(t.c[column] == value)
        with self._read() as conn:
            return [int(i) for i in conn.execute(query.order_by(t.c.id)).scalars()]

    def next_due(self, after: datetime) -> datetime | None:
        """The earliest time later than ``after`` at which a ``retrying`` job falls due
        or an enabled schedule fires, or None: one read of the hot path (the
        dispatcher's every poll). Those due already are left out: pools and the
        scheduler take them at once."""
        params = {"after": self._sql.time(after), "yes": True}
        found = self._writer.read_one(self._sql.text(_NEXT_DUE), params)
        return None if found is None or found[0] is None else aware(found[0])

    def schedule_due(self, now: datetime) -> bool:
        """Whether an enabled schedule's fire time has come: a read of the hot path, made
        before the schedules are listed."""
        params = {"now": self._sql.time(now), "yes": True}
        return self._writer.read_one(self._sql.text(_SCHEDULE_DUE), params) is not None

    def queue_counts(self, table: str, kind: str | None = None) -> tuple[int, int]:
        """(queued, delayed): jobs a worker could take now, and retrying jobs not yet due."""
        t = job_table(table)
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
        query = sa.select(queued, delayed).where(t.c.status.in_(CLAIMABLE))
        if kind is not None:
            query = query.where(t.c.kind == kind)
        with self._read() as conn:
            row = conn.execute(query).one()
        return int(row[0] or 0), int(row[1] or 0)

    def status_counts(self, table: str, kind: str | None = None) -> dict[str, int]:
        """Number of jobs per status."""
        t = job_table(table)
        query = sa.select(t.c.status, sa.func.count()).group_by(t.c.status)
        if kind is not None:
            query = query.where(t.c.kind == kind)
        with self._read() as conn:
            return {str(s): int(n) for s, n in conn.execute(query)}
