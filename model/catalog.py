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
- a target's password is stored encrypted; its URL and its encrypted password fit
  Harbor 1.4's columns (:data:`MAX_TARGET_URL_CHARS`, :data:`MAX_TARGET_PASSWORD_BYTES`,
  :class:`~model.errors.InvalidRequest` naming ``url`` or ``password``);
- a policy's triggers (a schedule, on push, on deletion) and scan schedules are
  checked (:mod:`model.schedules`) and go with the policy when it is deleted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy.exc
from sqlmodel import SQLModel

from model.crypto import SecretBox
from model.db import Store
from model.db.tables import (
    Project,
    ReplicationImmediateTrigger,
    ReplicationPolicy,
    ReplicationTarget,
    Schedule,
    utcnow,
)
from model.errors import InvalidRequest, JobServiceError, NotFound
from model.schedules import check_pattern, parse
from model.status import ACTIVE

__all__ = [
    "KEEP",
    "MAX_TARGET_PASSWORD_BYTES",
    "MAX_TARGET_URL_CHARS",
    "Catalog",
    "InUse",
    "Keep",
    "NameTaken",
    "Triggers",
]

#: Characters of a target's URL: Harbor 1.4's ``replication_target.url`` column.
MAX_TARGET_URL_CHARS = 64
#: Bytes of a target's password whose ``<enc-v2>`` (or ``<enc-v1>``) form fits Harbor 1.4's
#: 128-character ``replication_target.password`` column.
MAX_TARGET_PASSWORD_BYTES = 62

_Row = TypeVar("_Row", bound=SQLModel)

#: The job table of replication jobs, whose rows name their policy.
_REPLICATION_JOBS = "replication_job"


class Keep(enum.Enum):
    """:meth:`Catalog.set_triggers`: leave the schedule as it is (:data:`KEEP`)."""

    KEEP = "keep"


KEEP = Keep.KEEP


def _check_url(url: str) -> None:
    if len(url) > MAX_TARGET_URL_CHARS:
        raise InvalidRequest(
            "url", f"must be at most {MAX_TARGET_URL_CHARS} characters (Harbor 1.4's column)"
        )


def _wanted(
    current: Schedule | None, schedule: str | Keep | None, timezone: str | None
) -> tuple[str | Keep | None, str]:
    """The cron expression and time zone a policy's schedule gets from
    :meth:`Catalog.set_triggers`'s ``schedule`` and ``timezone`` (``current``: its
    schedule now)."""
    cron = current.cron if schedule is KEEP and current else schedule
    zone = timezone or (current.timezone if current else "UTC")
    return cron, zone


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


@dataclass(frozen=True)
class Triggers:
    """What starts a policy's jobs besides a request: a schedule (a cron expression in
    ``timezone``, next firing at ``next_fire_at``), a push, a deletion."""

    schedule: str | None = None
    timezone: str = "UTC"
    next_fire_at: datetime | None = None
    on_push: bool = False
    on_delete: bool = False


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

    def add_project(self, name: str, public: bool, auto_scan: bool = False) -> Project:
        """Adds a project (``auto_scan``: scan every image pushed to it); raises
        :class:`NameTaken`."""
        return self._add(Project(name=name, public=public, auto_scan=auto_scan), "project")

    def update_project(self, ident: int, **values: Any) -> Project:
        """Sets ``values`` on a project; raises :class:`NotFound`, :class:`NameTaken`."""
        return self._update(Project, ident, "project", values)

    def delete_project(self, ident: int) -> None:
        """Deletes a project no live policy uses; raises :class:`NotFound`, :class:`InUse`."""
        self._delete_unused(Project, ident, "project", "project_id")

    def projects_in_use(self) -> set[int]:
        """The ids of the projects a live policy uses (which cannot be deleted)."""
        return {p.project_id for p in self.policies()}

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
        raises :class:`NameTaken`, :class:`~model.errors.InvalidRequest`."""
        _check_url(url)
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
        raises :class:`NotFound`, :class:`NameTaken`, :class:`~model.errors.InvalidRequest`."""
        if "url" in values:
            _check_url(values["url"])
        if password is not None:
            values["password"] = self._encrypt(password)
        return self._update(ReplicationTarget, ident, "target", values)

    def delete_target(self, ident: int) -> None:
        """Deletes a target no live policy uses; raises :class:`NotFound`, :class:`InUse`."""
        self._delete_unused(ReplicationTarget, ident, "target", "target_id")

    def _delete_unused(self, model: type[SQLModel], ident: int, what: str, column: str) -> None:
        """Deletes the row ``ident`` of ``model`` unless a live policy's ``column`` names
        it; raises :class:`NotFound`, :class:`InUse`."""
        self.store.get(model, ident)
        users = [int(p.id or 0) for p in self.policies(**{column: ident})]
        if users:
            message = f"{what} {ident} is used by replication policies {users}"
            raise InUse(what, ident, users, message)
        self.store.delete(model, ident)

    def _encrypt(self, password: str) -> str:
        if len(password.encode("utf-8", "surrogatepass")) > MAX_TARGET_PASSWORD_BYTES:
            raise InvalidRequest(
                "password",
                f"must be at most {MAX_TARGET_PASSWORD_BYTES} bytes (its encrypted form "
                "fills Harbor 1.4's 128-character column)",
            )
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

    def add_policy(
        self,
        *,
        schedule: str | None = None,
        timezone: str = "UTC",
        on_push: bool = False,
        on_delete: bool = False,
        **values: Any,
    ) -> ReplicationPolicy:
        """Adds a policy (``values``: its columns) with its triggers (as
        :meth:`set_triggers`'s). Everything is checked before anything is written:
        raises :class:`~model.errors.InvalidRequest` naming ``schedule`` or ``timezone``,
        :class:`NotFound` (its project or target, ``field`` naming which),
        :class:`NameTaken`."""
        if schedule is not None:
            parse(schedule, timezone)
        self._check_references(values.get("project_id"), values.get("target_id"))
        self._check_policy_name(values["name"], None)
        policy = self.store.add(ReplicationPolicy(**values))
        assert policy.id is not None
        self.set_triggers(
            policy.id, schedule=schedule, timezone=timezone, on_push=on_push, on_delete=on_delete
        )
        return policy

    def update_policy(
        self,
        ident: int,
        *,
        schedule: str | Keep | None = KEEP,
        timezone: str | None = None,
        on_push: bool | None = None,
        on_delete: bool | None = None,
        **values: Any,
    ) -> ReplicationPolicy:
        """Sets ``values`` (columns) and the triggers (as :meth:`set_triggers`'s: left
        out, kept) of a live policy. Everything is checked before anything is written:
        raises :class:`~model.errors.InvalidRequest` naming ``schedule`` or ``timezone``,
        :class:`NotFound`, :class:`NameTaken`."""
        self._check_schedule(ident, schedule, timezone)
        policy = self.policy(ident)
        self._check_references(values.get("project_id"), values.get("target_id"))
        if "name" in values:
            self._check_policy_name(values["name"], ident)
        if values:
            policy = self.store.update(ReplicationPolicy, ident, **values)
        self.set_triggers(
            ident, schedule=schedule, timezone=timezone, on_push=on_push, on_delete=on_delete
        )
        return policy

    def delete_policy(self, ident: int) -> None:
        """Marks a live policy without unfinished jobs deleted (its row stays for its
        jobs' history); raises :class:`NotFound`, :class:`InUse`."""
        self.policy(ident)
        active = self.store.job_ids(_REPLICATION_JOBS, ACTIVE, policy_id=ident)
        if active:
            message = f"replication policy {ident} has unfinished jobs {active}: stop them first"
            raise InUse("replication policy", ident, active, message)
        self.store.update(ReplicationPolicy, ident, deleted=True)
        self.set_triggers(ident, schedule=None, on_push=False, on_delete=False, check=False)

    # -- triggers ----------------------------------------------------------------------

    def triggers(self, policy_id: int) -> Triggers:
        """The triggers of a policy (no check that it is live)."""
        schedule = self._policy_schedule(policy_id)
        immediate = self.store.list_rows(ReplicationImmediateTrigger, policy_id=policy_id)
        return Triggers(
            schedule=schedule.cron if schedule else None,
            timezone=schedule.timezone if schedule else "UTC",
            next_fire_at=schedule.next_fire_at if schedule else None,
            on_push=any(t.on_push for t in immediate),
            on_delete=any(t.on_deletion for t in immediate),
        )

    def set_triggers(
        self,
        policy_id: int,
        *,
        schedule: str | Keep | None = KEEP,
        timezone: str | None = None,
        on_push: bool | None = None,
        on_delete: bool | None = None,
        check: bool = True,
    ) -> Triggers:
        """Sets a live policy's triggers: ``schedule`` None removes it, :data:`KEEP` (the
        default) keeps it; ``timezone`` None keeps
        the schedule's; ``on_push`` / ``on_delete`` None keep theirs. Raises
        :class:`NotFound`, :class:`~model.errors.InvalidRequest` naming ``schedule`` or
        ``timezone``."""
        policy = self.policy(policy_id) if check else None
        current = self._policy_schedule(policy_id)
        if schedule is not KEEP or timezone is not None:
            cron, zone = _wanted(current, schedule, timezone)
            if cron is None:
                if current is not None and current.id is not None:
                    self.store.delete(Schedule, current.id)
            elif isinstance(cron, str):
                checked = parse(cron, zone)
                values: dict[str, Any] = {
                    "cron": checked.expression,
                    "timezone": checked.timezone,
                    "next_fire_at": checked.next_after(utcnow()),
                    "enabled": True,
                }
                if current is not None and current.id is not None:
                    self.store.update(Schedule, current.id, **values)
                else:
                    self.store.add(Schedule(kind="replication", policy_id=policy_id, **values))
        if on_push is not None or on_delete is not None:
            self._set_immediate(policy_id, policy, on_push, on_delete)
        return self.triggers(policy_id)

    def _set_immediate(
        self,
        policy_id: int,
        policy: ReplicationPolicy | None,
        on_push: bool | None,
        on_delete: bool | None,
    ) -> None:
        rows = self.store.list_rows(ReplicationImmediateTrigger, policy_id=policy_id)
        push = on_push if on_push is not None else any(t.on_push for t in rows)
        delete = on_delete if on_delete is not None else any(t.on_deletion for t in rows)
        for extra in rows[1:]:
            assert extra.id is not None
            self.store.delete(ReplicationImmediateTrigger, extra.id)
        if rows and rows[0].id is not None:
            if push or delete:
                self.store.update(
                    ReplicationImmediateTrigger, rows[0].id, on_push=push, on_deletion=delete
                )
            else:
                self.store.delete(ReplicationImmediateTrigger, rows[0].id)
        elif (push or delete) and policy is not None:
            project = self.store.get(Project, policy.project_id)
            self.store.add(
                ReplicationImmediateTrigger(
                    policy_id=policy_id, namespace=project.name, on_push=push, on_deletion=delete
                )
            )

    def _check_schedule(
        self, policy_id: int, schedule: str | Keep | None, timezone: str | None
    ) -> None:
        """Raises :class:`~model.errors.InvalidRequest` if :meth:`set_triggers` would
        refuse ``schedule`` and ``timezone`` (the current ones where left out)."""
        if schedule is KEEP and timezone is None:
            return
        cron, zone = _wanted(self._policy_schedule(policy_id), schedule, timezone)
        if isinstance(cron, str):
            parse(cron, zone)

    def _policy_schedule(self, policy_id: int) -> Schedule | None:
        found = self.store.list_rows(Schedule, kind="replication", policy_id=policy_id)
        return found[0] if found else None

    def schedules(self) -> list[Schedule]:
        """Every schedule (policies' and scans'), by id."""
        return self.store.list_rows(Schedule)

    def add_scan_schedule(self, pattern: str, cron: str, timezone: str = "UTC") -> Schedule:
        """Scans every image whose repository matches ``pattern`` on a schedule; raises
        :class:`~model.errors.InvalidRequest` naming the bad field."""
        check_pattern(pattern)
        checked = parse(cron, timezone)
        return self.store.add(
            Schedule(
                kind="scan",
                pattern=pattern,
                cron=checked.expression,
                timezone=checked.timezone,
                next_fire_at=checked.next_after(utcnow()),
            )
        )

    def delete_schedule(self, ident: int) -> None:
        """Deletes a scan schedule (a policy's goes with :meth:`set_triggers`); raises
        :class:`NotFound`."""
        row = self.store.get(Schedule, ident)
        if row.kind != "scan":
            raise NotFound("scan schedule", ident)
        self.store.delete(Schedule, ident)

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
