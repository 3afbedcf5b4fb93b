"""The store's plain rows (projects, targets, policies, schedules…): one ORM session per
call (see :class:`PlainRows`)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from model.db.tables import Project, ReplicationPolicy, ReplicationTarget, utcnow
from model.errors import NotFound

__all__ = ["PlainRows"]

_T = TypeVar("_T", bound=SQLModel)


class PlainRows:
    """The ORM reads and writes of :class:`~model.db.store.Store`: reads on a session of
    :attr:`engine`, writes in :meth:`session` (which holds the store's write lock)."""

    engine: Engine

    def session(self) -> AbstractContextManager[Session]:
        raise NotImplementedError

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
