"""What routes take besides their inputs, declared once: the service, the catalog, the
metrics, the auth requirement, and the path parameters shared by several routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request, Security
from fastapi.security import APIKeyCookie

from actors.http.metrics import ServiceMetrics
from actors.http.schemas import MAX_ID
from actors.service import JobService
from model.catalog import Catalog

__all__ = ["AUTH", "CatalogDep", "JobId", "Kind", "MetricsDep", "Offset", "RowId", "ServiceDep"]

#: The cookie every protected route documents (the middleware checks it).
AUTH = Security(APIKeyCookie(name="secret", auto_error=False, description="The UI secret"))


# Async: they only read the app's state, so they run on the event loop, not a thread.
async def _service(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service


ServiceDep = Annotated[JobService, Depends(_service)]


async def _catalog(service: ServiceDep) -> Catalog:
    # Per request: the service's store and key exist only while it runs.
    return Catalog(service.store, service.box)


async def _metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


CatalogDep = Annotated[Catalog, Depends(_catalog)]
MetricsDep = Annotated[ServiceMetrics, Depends(_metrics)]

JobId = Annotated[int, Path(alias="id", ge=0, le=MAX_ID, description="The job's id")]
RowId = Annotated[int, Path(alias="id", ge=0, le=MAX_ID)]
Kind = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,63}$", description="The job kind")]
Offset = Annotated[int, Query(ge=0, le=2**62, description="Byte of the log to start at")]
