"""The dashboard's reads: the jobs of every kind in one filtered, paged list, the jobs
ended per minute, the last failures, the scanned images and their severity counts.

Read-only SQLAlchemy Core statements on the store's engine (every dialect alike); the
dashboard writes only through the job service and :class:`~model.catalog.Catalog`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa

from model.db.store import Store
from model.db.tables import JOB_TABLES, ImgScanJob, ImgScanOverview, ScanFinding
from model.stamps import aware
from model.status import TERMINAL, Status

__all__ = [
    "PAGE_SIZE",
    "JobFilter",
    "JobPage",
    "ListedKind",
    "ended_per_minute",
    "job_page",
    "last_failures",
    "scanned_images",
    "severity_counts",
]

#: Rows of the jobs table per page.
PAGE_SIZE = 25


class ListedKind(Protocol):
    """What the list needs of a job kind (:class:`model.kinds.JobKind` has it): its
    name, its table, and the ``kind`` column value its rows carry there (None when the
    table is the kind's own)."""

    @property
    def name(self) -> str: ...

    @property
    def table(self) -> str: ...

    @property
    def scope(self) -> str | None: ...


def _table(name: str) -> sa.Table:
    return JOB_TABLES[name].__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class JobFilter:
    """What the jobs table shows: ``kind`` (a kind's name, or "" for all), ``status``
    ("" for all), ``repository`` (a part of the name, "" for all), ``policy_id``."""

    kind: str = ""
    status: str = ""
    repository: str = ""
    policy_id: int | None = None


@dataclass(frozen=True)
class JobPage:
    """One page of jobs (dicts: kind, id, status, attempts, repository, detail,
    policy_id, creation_time, update_time, next_attempt_at), its number (from 1) and
    the number of jobs the filter matches."""

    rows: list[dict[str, Any]]
    page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // PAGE_SIZE))


def _select(kind: ListedKind, wanted: JobFilter) -> sa.Select[Any] | None:
    """The jobs of ``kind`` that ``wanted`` lets through, in the list's columns; None
    when the filter rules the whole kind out."""
    t = _table(kind.table)
    if wanted.policy_id is not None and "policy_id" not in t.c:
        return None
    if wanted.repository and "repository" not in t.c:
        return None
    detail: Any
    if kind.table == "replication_job":
        detail = sa.cast(t.c.tags, sa.Text)
    elif kind.table == "img_scan_job":
        detail = t.c.tag
    else:
        detail = sa.cast(t.c.params, sa.Text)
    query = sa.select(
        sa.literal(kind.name).label("kind"),
        t.c.id,
        t.c.status,
        t.c.attempts,
        (t.c.repository if "repository" in t.c else sa.null()).label("repository"),
        detail.label("detail"),
        (t.c.policy_id if "policy_id" in t.c else sa.null()).label("policy_id"),
        t.c.creation_time,
        t.c.update_time,
        t.c.next_attempt_at,
    )
    if kind.scope is not None:
        query = query.where(t.c.kind == kind.scope)
    if wanted.status:
        query = query.where(t.c.status == wanted.status)
    if wanted.repository:
        pattern = wanted.repository.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(t.c.repository.like(f"%{pattern}%", escape="\\"))
    if wanted.policy_id is not None:
        query = query.where(t.c.policy_id == wanted.policy_id)
    return query


def job_page(store: Store, kinds: Sequence[ListedKind], wanted: JobFilter, page: int) -> JobPage:
    """Page ``page`` (from 1) of the jobs of ``kinds`` that ``wanted`` lets through,
    newest first."""
    chosen = [k for k in kinds if not wanted.kind or k.name == wanted.kind]
    selects = [s for s in (_select(k, wanted) for k in chosen) if s is not None]
    if not selects:
        return JobPage([], 1, 0)
    union = sa.union_all(*selects).subquery("jobs")
    with store.engine.connect() as conn:
        total = int(conn.execute(sa.select(sa.func.count()).select_from(union)).scalar() or 0)
        pages = max(1, -(-total // PAGE_SIZE))
        page = min(max(page, 1), pages)
        rows = conn.execute(
            sa.select(union)
            .order_by(union.c.creation_time.desc(), union.c.id.desc(), union.c.kind)
            .limit(PAGE_SIZE)
            .offset((page - 1) * PAGE_SIZE)
        ).mappings()
        out = [_aware_row(dict(row)) for row in rows]
    return JobPage(out, page, total)


def ended_per_minute(store: Store, kinds: Sequence[ListedKind], minutes: int = 60) -> list[int]:
    """The number of jobs (of every kind) that ended in each of the last ``minutes``
    minutes, oldest first: a job counts in the minute of its last update, if it holds
    a terminal status."""
    now = datetime.now(UTC)
    since = now - timedelta(minutes=minutes)
    counts = [0] * minutes
    tables = {k.table for k in kinds}
    with store.engine.connect() as conn:
        for name in sorted(tables):
            t = _table(name)
            query = sa.select(t.c.update_time).where(
                t.c.status.in_(sorted(TERMINAL)), t.c.update_time >= since
            )
            for (when,) in conn.execute(query):
                age = (now - aware(when)).total_seconds() // 60
                if 0 <= age < minutes:
                    counts[minutes - 1 - int(age)] += 1
    return counts


def last_failures(
    store: Store, kinds: Sequence[ListedKind], limit: int = 5
) -> list[dict[str, Any]]:
    """The ``limit`` jobs that most recently ended in ``error``, newest first (kind,
    id, repository, update_time)."""
    selects = [
        s for s in (_select(k, JobFilter(status=Status.ERROR)) for k in kinds) if s is not None
    ]
    if not selects:
        return []
    union = sa.union_all(*selects).subquery("failed")
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(union).order_by(union.c.update_time.desc()).limit(limit)
        ).mappings()
        return [_aware_row(dict(row)) for row in rows]


def scanned_images(store: Store, limit: int = 200) -> list[dict[str, Any]]:
    """The latest scan of each image, newest first: digest, job id, severity, time,
    and the repository and tag the job scanned."""
    o = ImgScanOverview.__table__  # type: ignore[attr-defined]
    j = ImgScanJob.__table__  # type: ignore[attr-defined]
    f = ScanFinding.__table__  # type: ignore[attr-defined]
    findings = (
        sa.select(sa.func.count())
        .where(f.c.image_digest == o.c.image_digest)
        .scalar_subquery()
        .label("findings")
    )
    query = (
        sa.select(
            o.c.image_digest,
            o.c.scan_job_id,
            o.c.severity,
            o.c.update_time,
            j.c.repository,
            j.c.tag,
            findings,
        )
        .select_from(o.outerjoin(j, j.c.id == o.c.scan_job_id))
        .order_by(o.c.update_time.desc())
        .limit(limit)
    )
    with store.engine.connect() as conn:
        return [_aware_row(dict(row)) for row in conn.execute(query).mappings()]


def severity_counts(store: Store, digest: str) -> dict[int, int]:
    """The number of findings of an image per severity (Harbor's 1 to 5)."""
    f = ScanFinding.__table__  # type: ignore[attr-defined]
    query = (
        sa.select(f.c.severity, sa.func.count())
        .where(f.c.image_digest == digest)
        .group_by(f.c.severity)
    )
    with store.engine.connect() as conn:
        return {int(s): int(n) for s, n in conn.execute(query)}


def _aware_row(row: dict[str, Any]) -> dict[str, Any]:
    for name in ("creation_time", "update_time", "next_attempt_at"):
        if row.get(name) is not None:
            row[name] = aware(row[name])
    return row
