"""The HTTP API's resources: projects, replication targets and policies (``GET``/``POST``
on the collection, ``GET``/``PUT``/``DELETE`` on one), and image scan results.

A target's password is write-only: it is encrypted on the way in and no answer has it.
Names are unique (409). A project or target that a policy uses cannot be deleted (409);
a policy with unfinished jobs neither (409); a deleted policy keeps its row, marked
``deleted``, for its jobs' history.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from actors.middleware import Problem
from actors.schemas import (
    DIGEST_PATTERN,
    MAX_ID,
    ErrorBody,
    ImageScan,
    PolicyIn,
    PolicyOut,
    PolicyUpdate,
    ProjectIn,
    ProjectOut,
    ProjectUpdate,
    TargetIn,
    TargetOut,
    TargetUpdate,
)
from actors.service import JobService
from model.db import Store
from model.db.tables import (
    ImgScanOverview,
    Project,
    ReplicationPolicy,
    ReplicationTarget,
    ScanFinding,
)
from model.status import ACTIVE

__all__ = ["resources_router"]

RowId = Annotated[int, Path(alias="id", ge=0, le=MAX_ID)]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Not found"},
    409: {"model": ErrorBody, "description": "A name is taken, or the row is in use"},
}


def resources_router(service: JobService) -> APIRouter:
    """The routes of projects, targets, policies and image scans (under ``/api``)."""
    router = APIRouter(prefix="/api", responses=_RESPONSES)

    def _store() -> Store:
        return service.store

    # -- images ----------------------------------------------------------------------

    @router.get("/images/{digest}/scan", tags=["images"])
    def image_scan(
        digest: Annotated[str, Path(pattern=DIGEST_PATTERN, description="sha256:…")],
    ) -> ImageScan:
        """The latest scan of an image: overview and findings."""
        overviews = _store().list_rows(ImgScanOverview, image_digest=digest)
        if not overviews:
            raise Problem(404, f"image {digest} has not been scanned", "digest")
        overview = overviews[0]
        findings = _store().list_rows(ScanFinding, image_digest=digest)
        return ImageScan(
            image_digest=overview.image_digest,
            scan_job_id=overview.scan_job_id,
            severity=overview.severity,
            components_overview=_maybe_json(overview.components_overview),
            details_key=overview.details_key,
            creation_time=overview.creation_time,
            update_time=overview.update_time,
            findings=findings,  # type: ignore[arg-type]
        )

    # -- projects --------------------------------------------------------------------

    @router.get("/projects", tags=["projects"])
    def list_projects() -> list[ProjectOut]:
        return [ProjectOut.model_validate(p) for p in _store().list_rows(Project)]

    @router.post("/projects", status_code=201, tags=["projects"])
    def add_project(body: ProjectIn) -> ProjectOut:
        _unique(_store().list_rows(Project, name=body.name), "project", body.name)
        return ProjectOut.model_validate(_store().add(Project(name=body.name, public=body.public)))

    @router.get("/projects/{id}", tags=["projects"])
    def get_project(ident: RowId) -> ProjectOut:
        return ProjectOut.model_validate(_store().get(Project, ident))

    @router.put("/projects/{id}", tags=["projects"])
    def update_project(ident: RowId, body: ProjectUpdate) -> ProjectOut:
        _store().get(Project, ident)
        values = body.model_dump(exclude_none=True)
        if "name" in values:
            same = _store().list_rows(Project, name=values["name"])
            _unique([p for p in same if p.id != ident], "project", values["name"])
        return ProjectOut.model_validate(_store().update(Project, ident, **values))

    @router.delete("/projects/{id}", status_code=204, tags=["projects"])
    def delete_project(ident: RowId) -> Response:
        _store().get(Project, ident)
        users = _live_policies(_store(), project_id=ident)
        if users:
            raise Problem(
                409, f"project {ident} is used by replication policies {_ids(users)}", "id"
            )
        _store().delete(Project, ident)
        return Response(status_code=204)

    # -- targets ---------------------------------------------------------------------

    @router.get("/targets", tags=["targets"])
    def list_targets() -> list[TargetOut]:
        return [_target_out(t) for t in _store().list_rows(ReplicationTarget)]

    @router.post("/targets", status_code=201, tags=["targets"])
    def add_target(body: TargetIn) -> TargetOut:
        _unique(_store().list_rows(ReplicationTarget, name=body.name), "target", body.name)
        password = body.password.get_secret_value()
        row = ReplicationTarget(
            name=body.name,
            url=body.url,
            username=body.username,
            password=service.box.encrypt(password) if password else "",
            insecure=body.insecure,
        )
        return _target_out(_store().add(row))

    @router.get("/targets/{id}", tags=["targets"])
    def get_target(ident: RowId) -> TargetOut:
        return _target_out(_store().get(ReplicationTarget, ident))

    @router.put("/targets/{id}", tags=["targets"])
    def update_target(ident: RowId, body: TargetUpdate) -> TargetOut:
        _store().get(ReplicationTarget, ident)
        values = body.model_dump(exclude_none=True, exclude={"password"})
        if body.password is not None:
            password = body.password.get_secret_value()
            values["password"] = service.box.encrypt(password) if password else ""
        if "name" in values:
            same = _store().list_rows(ReplicationTarget, name=values["name"])
            _unique([t for t in same if t.id != ident], "target", values["name"])
        return _target_out(_store().update(ReplicationTarget, ident, **values))

    @router.delete("/targets/{id}", status_code=204, tags=["targets"])
    def delete_target(ident: RowId) -> Response:
        _store().get(ReplicationTarget, ident)
        users = _live_policies(_store(), target_id=ident)
        if users:
            raise Problem(
                409, f"target {ident} is used by replication policies {_ids(users)}", "id"
            )
        _store().delete(ReplicationTarget, ident)
        return Response(status_code=204)

    # -- policies --------------------------------------------------------------------

    @router.get("/policies/replication", tags=["policies"])
    def list_policies() -> list[PolicyOut]:
        return [PolicyOut.model_validate(p) for p in _live_policies(_store())]

    @router.post("/policies/replication", status_code=201, tags=["policies"])
    def add_policy(body: PolicyIn) -> PolicyOut:
        _referenced(_store(), body.project_id, body.target_id)
        _unique(_live_policies(_store(), name=body.name), "replication policy", body.name)
        row = ReplicationPolicy(**body.model_dump())
        return PolicyOut.model_validate(_store().add(row))

    @router.get("/policies/replication/{id}", tags=["policies"])
    def get_policy(ident: RowId) -> PolicyOut:
        return PolicyOut.model_validate(_live_policy(_store(), ident))

    @router.put("/policies/replication/{id}", tags=["policies"])
    def update_policy(ident: RowId, body: PolicyUpdate) -> PolicyOut:
        _live_policy(_store(), ident)
        values = body.model_dump(exclude_none=True)
        _referenced(_store(), values.get("project_id"), values.get("target_id"))
        if "name" in values:
            same = _live_policies(_store(), name=values["name"])
            _unique([p for p in same if p.id != ident], "replication policy", values["name"])
        return PolicyOut.model_validate(_store().update(ReplicationPolicy, ident, **values))

    @router.delete("/policies/replication/{id}", status_code=204, tags=["policies"])
    def delete_policy(ident: RowId) -> Response:
        """Deletes a policy that has no unfinished job (its row stays, marked deleted,
        for its jobs' history)."""
        _live_policy(_store(), ident)
        active = _store().job_ids("replication_job", ACTIVE, policy_id=ident)
        if active:
            raise Problem(
                409,
                f"replication policy {ident} has unfinished jobs {active}: stop them first",
                "id",
            )
        _store().update(ReplicationPolicy, ident, deleted=True)
        return Response(status_code=204)

    return router


def _target_out(row: ReplicationTarget) -> TargetOut:
    return TargetOut(
        id=row.id or 0,
        name=row.name,
        url=row.url,
        username=row.username,
        has_password=bool(row.password),
        insecure=row.insecure,
        creation_time=row.creation_time,
        update_time=row.update_time,
    )


def _unique(same: list[Any], what: str, name: str) -> None:
    if same:
        raise Problem(409, f"a {what} named {name!r} exists (id {same[0].id})", "name")


def _live_policies(store: Store, **equal: Any) -> list[ReplicationPolicy]:
    rows: list[ReplicationPolicy] = store.list_rows(ReplicationPolicy, deleted=False, **equal)
    return rows


def _live_policy(store: Store, ident: int) -> ReplicationPolicy:
    row: ReplicationPolicy | None = store.find(ReplicationPolicy, ident)
    if row is None or row.deleted:
        raise Problem(404, f"replication policy {ident} not found", "id")
    return row


def _referenced(store: Store, project_id: int | None, target_id: int | None) -> None:
    if project_id is not None and store.find(Project, project_id) is None:
        raise Problem(404, f"project {project_id} not found", "project_id")
    if target_id is not None and store.find(ReplicationTarget, target_id) is None:
        raise Problem(404, f"replication target {target_id} not found", "target_id")


def _ids(rows: list[Any]) -> list[int]:
    return [int(r.id) for r in rows]


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return text
