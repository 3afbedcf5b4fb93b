"""The catalog's rules: projects, replication targets and replication policies.

Every door (the HTTP API, a program embedding :class:`~actors.service.JobService`)
changes these rows through :class:`Catalog`, so the same rules hold everywhere:

- names are unique (:class:`NameTaken`): projects' and targets' by the database's
  unique constraint, live policies' by a check before the write (a deleted policy
  keeps its row and its name, so the column has no constraint);
- a project or target that a live policy uses is not deleted (:class:`InUse`);
- a policy with unfinished jobs is not deleted (:class:`InUse`); a deleted policy keeps
  its row, marked ``deleted``, for its jobs' history;
- a policy names a project and a target that exist (:class:`~model.errors.NotFound`
  with ``field`` ``project_id`` or ``target_id``);
- a target's password is stored encrypted.
"""

from __future__ import annotations

from typing import Any, TypeVar

import sqlalchemy.exc
from sqlmodel import SQLModel

from model.crypto import SecretBox
from model.db import Store
from model.db.tables import Project, ReplicationPolicy, ReplicationTarget
from model.errors import JobServiceError, NotFound
from model.status import ACTIVE

__all__ = ["Catalog", "InUse", "NameTaken"]

_Row = TypeVar("_Row", bound=SQLModel)

#: The job table of replication jobs, whose rows name their policy.
_REPLICATION_JOBS = "replication_job"


class NameTaken(JobServiceError):
    """Another row of the same kind (``what``) has the name ``name`` (its id: ``ident``)."""

    def __init__(self, what: str, name: str, ident: int | None) -> None:
        super().__init__(f"a {what} named {name!r} exists (id {ident})")
        self.what = what
        self.name = name
        self.ident = ident


class InUse(JobServiceError):
    """The row ``what`` ``ident`` cannot be deleted: ``users`` (ids) still need it."""

    def __init__(self, what: str, ident: int, users: list[int], message: str) -> None:
        super().__init__(message)
        self.what = what
        self.ident = ident
        self.users = users


class Catalog:
    """Reads and changes projects, targets and policies in ``store``, applying the
    catalog's rules; ``box`` encrypts targets' passwords. Cheap: make one per caller."""

    def __init__(self, store: Store, box: SecretBox) -> None:
        self.store = store
        self.box = box

    # -- projects ----------------------------------------------------------------------

    def projects(self) -> list[Project]:
        """Every project, by id."""
        return self.store.list_rows(Project)

    def project(self, ident: int) -> Project:
        """One project; raises :class:`NotFound`."""
        return self.store.get(Project, ident)

    def add_project(self, name: str, public: bool) -> Project:
        """Adds a project; raises :class:`NameTaken`."""
        return self._add(Project(name=name, public=public), "project")

    def update_project(self, ident: int, **values: Any) -> Project:
        """Sets ``values`` on a project; raises :class:`NotFound`, :class:`NameTaken`."""
        return self._update(Project, ident, "project", values)

    def delete_project(self, ident: int) -> None:
        """Deletes a project no live policy uses; raises :class:`NotFound`, :class:`InUse`."""
        self.store.get(Project, ident)
        users = [int(p.id or 0) for p in self.policies(project_id=ident)]
        if users:
            message = f"project {ident} is used by replication policies {users}"
            raise InUse("project", ident, users, message)
        self.store.delete(Project, ident)

    # -- targets -----------------------------------------------------------------------

    def targets(self) -> list[ReplicationTarget]:
        """Every replication target, by id."""
        return self.store.list_rows(ReplicationTarget)

    def target(self, ident: int) -> ReplicationTarget:
        """One replication target; raises :class:`NotFound`."""
        return self.store.get(ReplicationTarget, ident)

    def add_target(
        self, name: str, url: str, username: str, password: str, insecure: bool
    ) -> ReplicationTarget:
        """Adds a target (``password`` in plain text, stored encrypted; empty: none);
        raises :class:`NameTaken`."""
        row = ReplicationTarget(
            name=name,
            url=url,
            username=username,
            password=self._encrypt(password),
            insecure=insecure,
        )
        return self._add(row, "target")

    def update_target(
        self, ident: int, password: str | None = None, **values: Any
    ) -> ReplicationTarget:
        """Sets ``values`` on a target, and its ``password`` (plain text) unless None;
        raises :class:`NotFound`, :class:`NameTaken`."""
        if password is not None:
            values["password"] = self._encrypt(password)
        return self._update(ReplicationTarget, ident, "target", values)

    def delete_target(self, ident: int) -> None:
        """Deletes a target no live policy uses; raises :class:`NotFound`, :class:`InUse`."""
        self.store.get(ReplicationTarget, ident)
        users = [int(p.id or 0) for p in self.policies(target_id=ident)]
        if users:
            message = f"target {ident} is used by replication policies {users}"
            raise InUse("target", ident, users, message)
        self.store.delete(ReplicationTarget, ident)

    def _encrypt(self, password: str) -> str:
        return self.box.encrypt(password) if password else ""

    # -- policies ----------------------------------------------------------------------

    def policies(self, **equal: Any) -> list[ReplicationPolicy]:
        """The live (not deleted) policies whose columns equal ``equal``, by id."""
        return self.store.list_rows(ReplicationPolicy, deleted=False, **equal)

    def policy(self, ident: int) -> ReplicationPolicy:
        """One live policy; raises :class:`NotFound` (also for a deleted one)."""
        row = self.store.find(ReplicationPolicy, ident)
        if row is None or row.deleted:
            raise NotFound("replication policy", ident)
        return row

    def add_policy(self, **values: Any) -> ReplicationPolicy:
        """Adds a policy; raises :class:`NotFound` (its project or target, ``field``
        naming which), :class:`NameTaken`."""
        self._check_references(values.get("project_id"), values.get("target_id"))
        self._check_policy_name(values["name"], None)
        return self.store.add(ReplicationPolicy(**values))

    def update_policy(self, ident: int, **values: Any) -> ReplicationPolicy:
        """Sets ``values`` on a live policy; raises :class:`NotFound`, :class:`NameTaken`."""
        self.policy(ident)
        self._check_references(values.get("project_id"), values.get("target_id"))
        if "name" in values:
            self._check_policy_name(values["name"], ident)
        return self.store.update(ReplicationPolicy, ident, **values)

    def delete_policy(self, ident: int) -> None:
        """Marks a live policy without unfinished jobs deleted (its row stays for its
        jobs' history); raises :class:`NotFound`, :class:`InUse`."""
        self.policy(ident)
        active = self.store.job_ids(_REPLICATION_JOBS, ACTIVE, policy_id=ident)
        if active:
            message = f"replication policy {ident} has unfinished jobs {active}: stop them first"
            raise InUse("replication policy", ident, active, message)
        self.store.update(ReplicationPolicy, ident, deleted=True)

    def _check_references(self, project_id: int | None, target_id: int | None) -> None:
        if project_id is not None and self.store.find(Project, project_id) is None:
            raise NotFound("project", project_id, field="project_id")
        if target_id is not None and self.store.find(ReplicationTarget, target_id) is None:
            raise NotFound("replication target", target_id, field="target_id")

    def _check_policy_name(self, name: str, ident: int | None) -> None:
        # Read before the write: live policies' names have no constraint to rely on.
        same = [p for p in self.policies(name=name) if p.id != ident]
        if same:
            raise NameTaken("replication policy", name, same[0].id)

    # -- unique names through the database's constraint ----------------------------------

    def _add(self, row: _Row, what: str) -> _Row:
        try:
            return self.store.add(row)
        except sqlalchemy.exc.IntegrityError:
            holder = self._holder(type(row), row.name, None)  # type: ignore[attr-defined]
            if holder is None:
                raise  # another constraint failed
            raise NameTaken(what, row.name, holder) from None  # type: ignore[attr-defined]

    def _update(self, model: type[_Row], ident: int, what: str, values: dict[str, Any]) -> _Row:
        try:
            return self.store.update(model, ident, **values)
        except sqlalchemy.exc.IntegrityError:
            holder = self._holder(model, values["name"], ident) if "name" in values else None
            if holder is None:
                raise  # another constraint failed
            raise NameTaken(what, values["name"], holder) from None

    def _holder(self, model: type[SQLModel], name: str, ident: int | None) -> int | None:
        """The id of another row of ``model`` named ``name``, if any."""
        for row in self.store.list_rows(model, name=name):
            if row.id != ident:  # type: ignore[attr-defined]
                return int(row.id)  # type: ignore[attr-defined]
        return None
