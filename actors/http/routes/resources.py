"""The HTTP API's resources: projects, replication targets and policies (``GET``/``POST``
on the collection, ``GET``/``PUT``/``DELETE`` on one), and image scan results.

The rules (unique names, rows in use, a target's password stored encrypted) are the
catalog's (:mod:`model.catalog`): these routes only translate. A target's password is
write-only: no answer has it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from actors.http.deps import AUTH, CatalogDep, RowId, ServiceDep
from actors.http.errors import ERRORS, IN_USE, NOT_FOUND
from actors.http.schemas import (
    DIGEST_PATTERN,
    ImageScan,
    PolicyIn,
    PolicyOut,
    PolicyUpdate,
    ProjectIn,
    ProjectOut,
    ProjectUpdate,
    ScanScheduleIn,
    ScheduleOut,
    TargetIn,
    TargetOut,
    TargetUpdate,
)
from model.catalog import KEEP, Catalog, Keep
from model.db.tables import ImgScanOverview, ReplicationPolicy, ReplicationTarget, ScanFinding
from model.errors import NotFound

__all__ = ["router"]

router = APIRouter(prefix="/api", dependencies=[AUTH], responses={**ERRORS, **NOT_FOUND, **IN_USE})

# -- images ------------------------------------------------------------------------------


@router.get("/images/{digest}/scan", tags=["images"])
def image_scan(
    service: ServiceDep,
    digest: Annotated[str, Path(pattern=DIGEST_PATTERN, description="sha256:…")],
) -> ImageScan:
    """The latest scan of an image: overview and findings."""
    overviews = service.store.list_rows(ImgScanOverview, image_digest=digest)
    if not overviews:
        raise NotFound("scan of image", digest, field="digest")
    overview = overviews[0]
    findings = service.store.list_rows(ScanFinding, image_digest=digest)
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


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return text


# -- projects ----------------------------------------------------------------------------


@router.get("/projects", tags=["projects"])
def list_projects(catalog: CatalogDep) -> list[ProjectOut]:
    return [ProjectOut.model_validate(p) for p in catalog.projects()]


@router.post("/projects", status_code=201, tags=["projects"])
def add_project(catalog: CatalogDep, body: ProjectIn) -> ProjectOut:
    return ProjectOut.model_validate(catalog.add_project(body.name, body.public, body.auto_scan))


@router.get("/projects/{id}", tags=["projects"])
def get_project(catalog: CatalogDep, ident: RowId) -> ProjectOut:
    return ProjectOut.model_validate(catalog.project(ident))


@router.put("/projects/{id}", tags=["projects"])
def update_project(catalog: CatalogDep, ident: RowId, body: ProjectUpdate) -> ProjectOut:
    values = body.model_dump(exclude_none=True)
    return ProjectOut.model_validate(catalog.update_project(ident, **values))


@router.delete("/projects/{id}", status_code=204, tags=["projects"])
def delete_project(catalog: CatalogDep, ident: RowId) -> Response:
    catalog.delete_project(ident)
    return Response(status_code=204)


# -- targets -----------------------------------------------------------------------------


@router.get("/targets", tags=["targets"])
def list_targets(catalog: CatalogDep) -> list[TargetOut]:
    return [_target_out(t) for t in catalog.targets()]


@router.post("/targets", status_code=201, tags=["targets"])
def add_target(catalog: CatalogDep, body: TargetIn) -> TargetOut:
    return _target_out(catalog.add_target(**body.plain()))


@router.get("/targets/{id}", tags=["targets"])
def get_target(catalog: CatalogDep, ident: RowId) -> TargetOut:
    return _target_out(catalog.target(ident))


@router.put("/targets/{id}", tags=["targets"])
def update_target(catalog: CatalogDep, ident: RowId, body: TargetUpdate) -> TargetOut:
    return _target_out(catalog.update_target(ident, **body.plain()))


@router.delete("/targets/{id}", status_code=204, tags=["targets"])
def delete_target(catalog: CatalogDep, ident: RowId) -> Response:
    catalog.delete_target(ident)
    return Response(status_code=204)


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


# -- policies ----------------------------------------------------------------------------


@router.get("/policies/replication", tags=["policies"])
def list_policies(catalog: CatalogDep) -> list[PolicyOut]:
    return [_policy_out(catalog, p) for p in catalog.policies()]


@router.post("/policies/replication", status_code=201, tags=["policies"])
def add_policy(catalog: CatalogDep, body: PolicyIn) -> PolicyOut:
    """Adds a policy with its triggers (a bad schedule or time zone writes nothing)."""
    return _policy_out(catalog, catalog.add_policy(**body.model_dump()))


@router.get("/policies/replication/{id}", tags=["policies"])
def get_policy(catalog: CatalogDep, ident: RowId) -> PolicyOut:
    return _policy_out(catalog, catalog.policy(ident))


@router.put("/policies/replication/{id}", tags=["policies"])
def update_policy(catalog: CatalogDep, ident: RowId, body: PolicyUpdate) -> PolicyOut:
    """Changes a policy; ``schedule`` ``""`` removes its schedule (a bad schedule or
    time zone writes nothing)."""
    schedule: str | Keep | None = KEEP if body.schedule is None else body.schedule or None
    values = body.model_dump(exclude_none=True, exclude={"schedule"})
    return _policy_out(catalog, catalog.update_policy(ident, schedule=schedule, **values))


def _policy_out(catalog: Catalog, policy: ReplicationPolicy) -> PolicyOut:
    assert policy.id is not None
    triggers = catalog.triggers(policy.id)
    return PolicyOut(
        **policy.model_dump(),
        schedule=triggers.schedule,
        timezone=triggers.timezone,
        next_fire_at=triggers.next_fire_at,
        on_push=triggers.on_push,
        on_delete=triggers.on_delete,
    )


@router.delete("/policies/replication/{id}", status_code=204, tags=["policies"])
def delete_policy(catalog: CatalogDep, ident: RowId) -> Response:
    """Deletes a policy that has no unfinished job (its row stays, marked deleted,
    for its jobs' history)."""
    catalog.delete_policy(ident)
    return Response(status_code=204)


# -- schedules ---------------------------------------------------------------------------


@router.get("/schedules", tags=["schedules"])
def list_schedules(catalog: CatalogDep) -> list[ScheduleOut]:
    """Every schedule, policies' and scans', with its next fire time."""
    return [
        ScheduleOut(**row.model_dump(exclude={"cron"}), schedule=row.cron)
        for row in catalog.schedules()
    ]


@router.post("/schedules/scan", status_code=201, tags=["schedules"])
def add_scan_schedule(catalog: CatalogDep, body: ScanScheduleIn) -> ScheduleOut:
    """Scans every tag of the repositories matching ``pattern`` on a schedule."""
    row = catalog.add_scan_schedule(body.pattern, body.schedule, body.timezone)
    return ScheduleOut(**row.model_dump(exclude={"cron"}), schedule=row.cron)


@router.delete("/schedules/{id}", status_code=204, tags=["schedules"])
def delete_schedule(catalog: CatalogDep, ident: RowId) -> Response:
    """Deletes a scan schedule (a policy's schedule is the policy's ``schedule``)."""
    catalog.delete_schedule(ident)
    return Response(status_code=204)
