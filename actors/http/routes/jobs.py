"""The jobs' routes (``/api/jobs``): queue replication and scan jobs, stop jobs, read a
job and its log.

The routes that take a body are the original's, called by Harbor 1.4's UI: they answer
what the original answered to the requests it sends (a JSON body without a
Content-Type, Go's zero values, a stop of an unknown policy)."""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute

from actors.http.deps import AUTH, JobId, Kind, Offset, ServiceDep
from actors.http.errors import BAD_GATEWAY, ERRORS, LOG_TEXT, NOT_FOUND, Problem
from actors.http.schemas import (
    JobIds,
    JobOut,
    JobStopped,
    ReplicationAction,
    ReplicationRequest,
    ScanJobId,
    ScanRequest,
)
from actors.service import JobService
from model.db.tables import GenericJob, ReplicationPolicy
from model.errors import NotFound
from model.operation import Operation
from model.replication import source_registry
from model.scan import image_digest

__all__ = ["JsonBodyRoute", "router"]

#: Bytes of a job log sent per chunk.
_LOG_CHUNK = 64 * 1024
#: Bytes read from the end of a log to find its last line.
_TAIL_BYTES = 4096
#: Columns every job row has (a generic job's, but its parameters); the rest of a
#: kind's own row are its parameters.
_JOB_COLUMNS = frozenset(GenericJob.model_fields) - {"params"}


class JsonBodyRoute(APIRoute):
    """A route whose body is JSON whatever the request's Content-Type says, or without
    one: the original decoded every body as JSON, and Harbor 1.4's UI sends none.

    A body that is not JSON (UTF-8 JSON, as the original's decoder) is still refused:
    400 naming ``body``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def read_as_json(request: Request) -> Response:
            # Rewritten before FastAPI reads the header to choose how to decode the body
            # (a new Request: the old one may hold the old headers).
            headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
            request.scope["headers"] = [*headers, (b"content-type", b"application/json")]
            request = Request(request.scope, request.receive)
            body = await request.body()  # kept by the request for the handler
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                # Else FastAPI's own answer, which names no field.
                raise RequestValidationError(
                    [{"type": "json_invalid", "loc": ("body", exc.start), "msg": "not UTF-8"}]
                ) from None
            return await handler(request)

        return read_as_json


# Every route here that takes a body is the original's, hence JsonBodyRoute.
router = APIRouter(
    prefix="/api/jobs",
    dependencies=[AUTH],
    responses=ERRORS,
    tags=["jobs"],
    route_class=JsonBodyRoute,
)


@router.post("/replication", responses={**NOT_FOUND, **BAD_GATEWAY})
def replicate(service: ServiceDep, body: ReplicationRequest) -> JobIds:
    """Queues replication jobs of a policy: one for ``repository`` (``operation``,
    by default ``transfer``, of ``tags``, by default every tag), or, when it is left
    out, a ``transfer`` of every tag of each repository of the policy's project."""
    repository = body.repository
    if repository is None:
        # As the original: the whole project is transferred, whatever else was asked.
        operation, tags = Operation.TRANSFER, []
    else:
        operation, tags = body.operation or Operation.TRANSFER, body.tags or []
    ids = service.replicate(body.policy_id, repository, tags, operation)
    return JobIds(job_ids=ids)


@router.post("/replication/actions")
def replication_action(service: ServiceDep, body: ReplicationAction) -> JobIds:
    """``stop``: the policy's pending and retrying jobs become ``stopped``, running
    ones stop at their next transition. Answers the ids acted on: none for an unknown
    policy, which is no error (as in the original, which Harbor's UI relies on)."""
    try:
        return JobIds(job_ids=service.stop_policy(body.policy_id))
    except NotFound as exc:
        if exc.what != ReplicationPolicy.__tablename__:
            raise
        return JobIds(job_ids=[])


@router.get("/replication/{id}/log", responses=LOG_TEXT, response_class=Response)
def replication_log(service: ServiceDep, job_id: JobId, offset: Offset = 0) -> Response:
    """The replication job's log as text, from byte ``offset``."""
    return _log(service, "replication", job_id, offset)


@router.post("/scan", responses={**NOT_FOUND, **BAD_GATEWAY})
def scan(service: ServiceDep, body: ScanRequest) -> ScanJobId:
    """Queues a scan of ``repository:tag``, which must be in the source registry."""
    with source_registry(service.settings) as client:
        digest = image_digest(client, body.repository, body.tag)
    return ScanJobId(job_id=service.scan(body.repository, body.tag, digest))


@router.get("/scan/{id}/log", responses=LOG_TEXT, response_class=Response)
def scan_log(service: ServiceDep, job_id: JobId, offset: Offset = 0) -> Response:
    """The scan job's log as text, from byte ``offset``."""
    return _log(service, "scan", job_id, offset)


@router.get("/{kind}/{id}", responses=NOT_FOUND)
def job(service: ServiceDep, kind: Kind, job_id: JobId) -> JobOut:
    """A job: status, attempts, times, parameters and the last line of its log."""
    row = service.job(kind, job_id)
    if "params" in row and "kind" in row:
        parameters = dict(row["params"])
    else:
        parameters = {k: v for k, v in row.items() if k not in _JOB_COLUMNS}
    return JobOut(
        id=row["id"],
        kind=kind,
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        creation_time=row["creation_time"],
        update_time=row["update_time"],
        parameters=parameters,
        progress=_last_line(service.log_path(kind, job_id)),
    )


@router.post("/{kind}/{id}/stop", responses=NOT_FOUND)
def stop(service: ServiceDep, kind: Kind, job_id: JobId) -> JobStopped:
    """Stops a job: a waiting one at once, a running one at its next transition."""
    return JobStopped(id=job_id, kind=kind, status=service.stop(kind, job_id))


@router.get("/{kind}/{id}/log", responses=LOG_TEXT, response_class=Response)
def kind_log(service: ServiceDep, kind: Kind, job_id: JobId, offset: Offset = 0) -> Response:
    """A job's log as text, from byte ``offset``."""
    return _log(service, kind, job_id, offset)


def _log(service: JobService, kind: str, job_id: int, offset: int) -> Response:
    path = service.log_path(kind, job_id)
    try:
        stream = open(path, "rb")  # noqa: SIM115  (closed by the generator)
    except FileNotFoundError:
        raise Problem(404, f"{kind} job {job_id} has no log", "id") from None
    size = os.fstat(stream.fileno()).st_size
    start = min(offset, size)
    stream.seek(start)

    def chunks() -> Iterator[bytes]:
        left = size - start
        try:
            while left > 0:
                data = stream.read(min(_LOG_CHUNK, left))
                if not data:
                    return
                left -= len(data)
                yield data
        finally:
            stream.close()

    return StreamingResponse(
        chunks(),
        media_type="text/plain; charset=utf-8",
        headers={"X-Log-Size": str(size), "Content-Length": str(size - start)},
    )


def _last_line(path: str) -> str | None:
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            stream.seek(max(size - _TAIL_BYTES, 0))
            tail = stream.read()
    except FileNotFoundError:
        return None
    lines = [line for line in tail.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else None
