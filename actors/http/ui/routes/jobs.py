"""The jobs table (filtered, paged, its rows re-read every second) and a job's page
(parameters, status timeline, attempts, progress, its log followed live, Stop)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from starlette.responses import Response

from actors.http.schemas import MAX_ID
from actors.http.ui._deps import FormDep, PagesDep, ServiceDep, logged_in
from actors.http.ui._joblog import read_log, read_log_from
from actors.http.ui._render import redirect
from actors.http.ui.routes.overview import STATUSES
from actors.service import JobService
from model.catalog import Catalog
from model.db.dashboard import JobFilter, job_page
from model.db.tables import ReplicationPolicy
from model.status import TERMINAL

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(logged_in)])

Kind = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
JobId = Annotated[int, Path(alias="id", ge=0, le=MAX_ID)]


@router.get("/jobs")
def jobs(request: Request, pages: PagesDep, service: ServiceDep) -> Response:
    """The jobs table with its filter form."""
    return pages.render(request, "jobs.html", **_jobs_context(request, service))


@router.get("/jobs/rows")
def job_rows(request: Request, pages: PagesDep, service: ServiceDep) -> Response:
    """The jobs table's rows alone (the page re-reads them every second)."""
    return pages.render(request, "jobs_rows.html", **_jobs_context(request, service))


def _jobs_context(request: Request, service: JobService) -> dict[str, Any]:
    query = request.query_params
    errors: dict[str, str] = {}
    kinds = list(service.kinds)
    kind = query.get("kind", "").strip()
    if kind and kind not in service.kinds.names():
        errors["kind"] = f"kind: no kind is named {kind!r}"
        kind = ""
    status = query.get("status", "").strip()
    if status and status not in STATUSES:
        errors["status"] = f"status: must be one of {', '.join(STATUSES)}"
        status = ""
    policy_id = _number(query.get("policy", ""), "policy", errors)
    page = _number(query.get("page", ""), "page", errors) or 1
    wanted = JobFilter(kind, status, query.get("repository", "").strip()[:255], policy_id)
    found = job_page(service.store, kinds, wanted, page)
    policies = Catalog(service.store, service.box).policies()
    filters = {
        "kind": wanted.kind,
        "status": wanted.status,
        "repository": wanted.repository,
        "policy": wanted.policy_id,
    }
    return {
        "found": found,
        "filters": filters,
        "errors": errors,
        "kinds": [k.name for k in kinds],
        "statuses": STATUSES,
        "policies": {p.id: p.name for p in policies},
    }


def _number(text: str, name: str, errors: dict[str, str]) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not text.isdigit() or int(text) > MAX_ID:
        errors[name] = f"{name}: must be a whole number"
        return None
    return int(text)


@router.get("/jobs/{kind}/{id}")
def job(
    request: Request, pages: PagesDep, service: ServiceDep, kind: Kind, job_id: JobId
) -> Response:
    """A job's page."""
    return pages.render(request, "job.html", **_job_context(service, kind, job_id))


@router.get("/jobs/{kind}/{id}/live")
def job_live(
    request: Request, pages: PagesDep, service: ServiceDep, kind: Kind, job_id: JobId
) -> Response:
    """A job page's live part alone: status, attempts, timeline, progress."""
    return pages.render(request, "job_live.html", **_job_context(service, kind, job_id))


def _job_context(service: JobService, kind: str, job_id: int) -> dict[str, Any]:
    row = service.job(kind, job_id)
    if "params" in row and "kind" in row:
        parameters = dict(row["params"] or {})
    else:
        skip = {"id", "status", "attempts", "next_attempt_at", "creation_time", "update_time"}
        skip |= {"node_id", "stop_requested"}
        parameters = {k: v for k, v in row.items() if k not in skip}
    view = read_log(service.log_path(kind, job_id))
    nodes = {n["id"]: n["name"] for n in service.nodes()}
    policy = None
    if kind == "replication" and row.get("policy_id") is not None:
        policy = service.store.find(ReplicationPolicy, int(row["policy_id"]))
    return {
        "kind": kind,
        "job": row,
        "parameters": parameters,
        "terminal": row["status"] in TERMINAL,
        "view": view,
        "node_name": nodes.get(row.get("node_id"), ""),
        "policy": policy,
    }


@router.get("/jobs/{kind}/{id}/log")
def job_log(service: ServiceDep, kind: Kind, job_id: JobId, offset: int = 0) -> Response:
    """The job's log from byte ``offset`` (a bounded piece, ending at a line end), with
    the log's size in ``X-Log-Size`` and where the piece ends in ``X-Log-Next``."""
    service.job(kind, job_id)
    found = read_log_from(service.log_path(kind, job_id), offset)
    if found is None:
        return Response(b"", media_type="text/plain; charset=utf-8", headers=_next(0, 0))
    data, size = found
    start = min(max(offset, 0), size)
    return Response(
        data, media_type="text/plain; charset=utf-8", headers=_next(size, start + len(data))
    )


def _next(size: int, after: int) -> dict[str, str]:
    return {"X-Log-Size": str(size), "X-Log-Next": str(after)}


@router.post("/jobs/{kind}/{id}/stop")
def stop(service: ServiceDep, form: FormDep, kind: Kind, job_id: JobId) -> Response:
    """Stops the job, and comes back to its page."""
    was = service.stop(kind, job_id)
    return redirect(f"/ui/jobs/{kind}/{job_id}", done="stop", was=was)
