"""The overview: live nodes and pools, jobs per status, jobs ended per minute over the
last hour, the last failures."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from actors.http.ui._deps import PagesDep, ServiceDep, logged_in
from actors.http.ui._joblog import read_log
from actors.service import JobService
from model.db.dashboard import ended_per_minute, last_failures
from model.status import Status

__all__ = ["router"]

#: Bytes read from the end of a failed job's log to find its error.
_ERROR_TAIL_BYTES = 16 * 1024
#: The statuses as the overview lists them.
STATUSES = [s.value for s in Status]

router = APIRouter(dependencies=[Depends(logged_in)])


@router.get("", include_in_schema=False)
def bare() -> Response:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/")
def overview(request: Request, pages: PagesDep, service: ServiceDep) -> Response:
    """The overview page; its live part is re-read every two seconds."""
    return pages.render(request, "overview.html", **overview_context(service))


@router.get("/overview/live")
def overview_live(request: Request, pages: PagesDep, service: ServiceDep) -> Response:
    """The overview's live part alone."""
    return pages.render(request, "overview_live.html", **overview_context(service))


def overview_context(service: JobService) -> dict[str, Any]:
    """What the overview shows, read now."""
    pools = service.stats()
    kinds = list(service.kinds)
    nodes = [row for row in service.nodes() if row["state"] == "live"]
    totals: dict[str, int] = dict.fromkeys(STATUSES, 0)
    for info in pools.values():
        for status, count in info["statuses"].items():
            totals[status] = totals.get(status, 0) + count
    failures = last_failures(service.store, kinds)
    for row in failures:
        path = service.log_path(row["kind"], row["id"])
        row["error"] = read_log(path, _ERROR_TAIL_BYTES).last_error
    minutes = ended_per_minute(service.store, kinds)
    return {
        "pools": pools,
        "nodes": nodes,
        "totals": totals,
        "statuses": STATUSES,
        "minutes": minutes,
        "ended_last_hour": sum(minutes),
        "busiest": max(minutes) if minutes else 0,
        "failures": failures,
    }
