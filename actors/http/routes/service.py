"""The service's routes: pool statistics (``/api/stats``), the health probe
(``/healthz``) and the Prometheus metrics (``/metrics``); only the first needs auth."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from actors.http.deps import AUTH, MetricsDep, ServiceDep
from actors.http.errors import ERRORS
from actors.http.schemas import Health, PoolStatsOut

__all__ = ["router"]

router = APIRouter(tags=["service"])


@router.get("/api/stats", dependencies=[AUTH], responses=ERRORS)
def stats(service: ServiceDep) -> dict[str, PoolStatsOut]:
    """Per pool: size, busy workers, running job ids, queued and delayed jobs, and
    the number of its jobs per status."""
    return {kind: PoolStatsOut(**info) for kind, info in service.stats().items()}


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
