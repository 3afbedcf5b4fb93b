"""The service's routes: pool statistics (``/api/stats``), the nodes sharing the
database (``/api/nodes``), the health probe (``/healthz``) and the Prometheus metrics
(``/metrics``); the first two need auth."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from actors.http.deps import AUTH, MetricsDep, ServiceDep
from actors.http.errors import ERRORS
from actors.http.schemas import (
    Health,
    NodeOut,
    NodesOut,
    NodeSummary,
    PoolStatsOut,
    PoolTotals,
    StatsOut,
)

__all__ = ["RECENT_ENDED_S", "live_totals", "router"]

#: Seconds an ended node (stopped or gone) stays in ``GET /api/nodes`` without ``?all``.
RECENT_ENDED_S = 3600.0

router = APIRouter(tags=["service"])


@router.get("/api/stats", dependencies=[AUTH], responses=ERRORS, response_model_exclude_none=True)
def stats(
    service: ServiceDep,
    nodes: Annotated[
        bool,
        Query(description="Also the live nodes (`nodes`) and their totals per kind (`totals`)"),
    ] = False,
) -> StatsOut:
    """This node's pools by kind: size, busy workers, running job ids, queued and
    delayed jobs, and the number of its jobs per status. With ``?nodes=true``, also
    ``nodes``: every live node (name, seconds since its beat, ``dead`` when overdue,
    size and busy per kind at its beat), and ``totals``: size and busy per kind summed
    over the live nodes not overdue."""
    pools = service.stats()
    out = StatsOut.model_validate({kind: PoolStatsOut(**info) for kind, info in pools.items()})
    if nodes:
        live = [row for row in service.nodes() if row["state"] == "live"]
        out.nodes = [NodeSummary(**row) for row in live]
        out.totals = live_totals(live)
    return out


@router.get("/api/nodes", dependencies=[AUTH], responses=ERRORS)
def nodes(
    service: ServiceDep,
    every: Annotated[
        bool,
        Query(
            alias="all",
            description="Every node the database remembers (ended ones are forgotten "
            "after 7 days), not only the live ones and those ended in the last hour",
        ),
    ] = False,
) -> NodesOut:
    """The nodes (started services) sharing the database, newest first: the live ones
    and those that ended (stopped, or found gone) in the last hour; every one with
    ``?all=true``. ``totals``: size and busy per kind summed over the live nodes not
    overdue. Loads and ages are as of each node's last beat (every
    ``heartbeat_interval``), ages by the database's clock."""
    rows = service.nodes()
    if not every:
        rows = [row for row in rows if row["state"] == "live" or _ended_recently(row)]
    return NodesOut(
        node=service.node_name,
        node_timeout=service.settings.node_timeout,
        nodes=[NodeOut(**row) for row in rows],
        totals=live_totals(rows),
    )


def live_totals(rows: Iterable[dict[str, Any]]) -> dict[str, PoolTotals]:
    """Size and busy per kind, summed over the nodes of ``rows`` that are live and not
    overdue (:meth:`JobService.nodes` rows)."""
    totals: dict[str, PoolTotals] = {}
    for row in rows:
        if row["state"] != "live" or row["dead"]:
            continue
        for kind, load in (row["pools"] or {}).items():
            total = totals.setdefault(kind, PoolTotals(size=0, busy=0))
            total.size += int(load.get("size", 0))
            total.busy += int(load.get("busy", 0))
    return dict(sorted(totals.items()))


def _ended_recently(row: dict[str, Any]) -> bool:
    if row["ended"] is None:
        return False
    # The database's now: the beat's time plus its age, which the database measured.
    now = row["heartbeat"] + timedelta(seconds=row["age_s"])
    return bool((now - row["ended"]).total_seconds() <= RECENT_ENDED_S)


@router.get(
    "/healthz",
    responses={
        503: {
            "model": Health,
            "description": "The actor system is not running, or the database cannot "
            "be written; `cause` says which",
        }
    },
)
def healthz(service: ServiceDep) -> JSONResponse:
    """200 while the dispatcher and every pool run and the database takes a write
    (probed on a connection of its own, within a second); 503 naming the cause
    otherwise. No auth."""
    if not service.healthy():
        cause: str | None = "the actor system is not running (the dispatcher or a pool stopped)"
    else:
        cause = service.database_problem(probe=True)
    if cause is None:
        return JSONResponse(Health(status="ok").model_dump(exclude_none=True))
    health = Health(status="unavailable", cause=cause)
    return JSONResponse(health.model_dump(), status_code=503, headers={"Retry-After": "5"})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
def prometheus(metrics: MetricsDep) -> Response:
    """Prometheus text format. No auth."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
