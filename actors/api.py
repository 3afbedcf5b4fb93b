"""The HTTP API: Harbor 1.4 jobservice's routes (same paths, bodies and status codes) and
the added ones, as a thin FastAPI layer over :class:`JobService`.

Every request but ``/healthz``, ``/metrics`` and the OpenAPI document needs the cookie
``secret`` equal to the ``ui_secret`` setting (missing: 401, wrong: 403). Bad input
always gets a 4xx JSON :class:`~actors.schemas.ErrorBody` naming the field; bodies
above ``max_body_bytes`` get 413. Handlers are plain functions: FastAPI runs them in
its thread pool, since the service's calls block on the database.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import psycopg
import sqlalchemy.exc
from fastapi import APIRouter, FastAPI, Path, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import APIKeyCookie
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from actors.metrics import ServiceMetrics
from actors.middleware import (
    BodyLimit,
    DatabaseGuard,
    Problem,
    RequestMetrics,
    SecretCookieAuth,
    error_response,
)
from actors.resources import resources_router
from actors.schemas import (
    MAX_ID,
    ErrorBody,
    FieldError,
    Health,
    JobIds,
    JobOut,
    JobStopped,
    PoolStatsOut,
    ReplicationAction,
    ReplicationRequest,
    ScanJobId,
    ScanRequest,
)
from actors.service import JobService
from model.errors import (
    ConfigError,
    InvalidRequest,
    JobServiceError,
    NotFound,
    ServiceNotRunning,
    StatusConflict,
    UnknownKind,
)
from model.operation import Operation
from model.registry import RegistryError

__all__ = ["create_app"]

#: Bytes of a job log sent per chunk.
_LOG_CHUNK = 64 * 1024
#: Bytes read from the end of a log to find its last line.
_TAIL_BYTES = 4096
#: Columns every job row has; the rest are its parameters.
_JOB_COLUMNS = frozenset(
    {"id", "kind", "status", "attempts", "next_attempt_at", "creation_time", "update_time"}
)

JobId = Annotated[int, Path(alias="id", ge=0, le=MAX_ID, description="The job's id")]
RowId = Annotated[int, Path(alias="id", ge=0, le=MAX_ID)]
Kind = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,63}$", description="The job kind")]


# -- the app --------------------------------------------------------------------------------


def create_app(service: JobService) -> FastAPI:
    """The HTTP API over ``service`` (started by the caller, and shut down by it).

    Raises :class:`ConfigError` when the ``ui_secret`` setting is not set: the API
    never runs open.
    """
    settings = service.settings
    secret = settings.ui_secret.get_secret_value() if settings.ui_secret is not None else ""
    if not secret:
        raise ConfigError(
            "ui_secret", "the HTTP API needs a secret: set JOBSERVICE_UI_SECRET (or UI_SECRET)"
        )
    metrics = ServiceMetrics(service)
    app = FastAPI(
        title="jobservice",
        version=_version(),
        description="Replication and scan jobs for a container registry "
        "(Harbor 1.4 jobservice's API, and more).",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.service = service
    app.state.metrics = metrics
    app.include_router(_jobs_router(service))
    app.include_router(resources_router(service), dependencies=[_AUTH], responses=_ERRORS)
    app.include_router(_open_router(service, metrics))
    _add_error_handlers(app)
    # The last added is the outermost: metrics see every answer, auth runs before a
    # body is read, and only a whole body reaches the database check and the routes.
    app.add_middleware(DatabaseGuard, problem=service.database_problem)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecretCookieAuth, secret=secret)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _version() -> str:
    try:
        return version("jobservice")
    except PackageNotFoundError:
        return "0"


_AUTH = Security(APIKeyCookie(name="secret", auto_error=False, description="The UI secret"))
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad input; `field` names it"},
    401: {"model": ErrorBody, "description": "The cookie `secret` is missing"},
    403: {"model": ErrorBody, "description": "The cookie `secret` is wrong"},
    413: {"model": ErrorBody, "description": "The request body is too large"},
    503: {
        "model": ErrorBody,
        "description": "The job service is not running, or its database cannot be reached",
    },
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Not found"}
}
_CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": ErrorBody, "description": "Conflict"}}
_BAD_GATEWAY: dict[int | str, dict[str, Any]] = {
    502: {"model": ErrorBody, "description": "The source registry failed"}
}
_LOG_TEXT: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "The log"},
    **_NOT_FOUND,
}


def _jobs_router(service: JobService) -> APIRouter:
    router = APIRouter(prefix="/api/jobs", dependencies=[_AUTH], responses=_ERRORS, tags=["jobs"])

    @router.post("/replication", responses={**_NOT_FOUND, **_BAD_GATEWAY})
    def replicate(body: ReplicationRequest) -> JobIds:
        """Queues replication jobs of a policy: one for ``repository``, or one per
        repository of the policy's project when it is left out (then ``transfer``)."""
        repository = body.repository or None
        operation = body.operation or Operation.TRANSFER
        tags = body.tags if repository is not None else []
        try:
            ids = service.replicate(body.policy_id, repository, tags, operation)
        except NotFound as exc:
            raise Problem(404, str(exc), "policy_id") from None
        return JobIds(job_ids=ids)

    @router.post("/replication/actions", responses=_NOT_FOUND)
    def replication_action(body: ReplicationAction) -> JobIds:
        """``stop``: the policy's pending and retrying jobs become ``stopped``, running
        ones stop at their next transition. Answers the ids acted on."""
        try:
            return JobIds(job_ids=service.stop_policy(body.policy_id))
        except NotFound as exc:
            raise Problem(404, str(exc), "policy_id") from None

    @router.get("/replication/{id}/log", responses=_LOG_TEXT, response_class=Response)
    def replication_log(job_id: JobId, offset: _Offset = 0) -> Response:
        """The replication job's log as text, from byte ``offset``."""
        return _log(service, "replication", job_id, offset)

    @router.post("/scan", responses={**_NOT_FOUND, **_BAD_GATEWAY})
    def scan(body: ScanRequest) -> ScanJobId:
        """Queues a scan of ``repository:tag``, which must be in the source registry."""
        with service.source_registry() as client:
            digest = client.manifest_digest(body.repository, body.tag)
        if digest is None:
            raise Problem(
                404, f"image {body.repository}:{body.tag} is not in the source registry", "tag"
            )
        return ScanJobId(job_id=service.scan(body.repository, body.tag, digest))

    @router.get("/scan/{id}/log", responses=_LOG_TEXT, response_class=Response)
    def scan_log(job_id: JobId, offset: _Offset = 0) -> Response:
        """The scan job's log as text, from byte ``offset``."""
        return _log(service, "scan", job_id, offset)

    @router.get("/{kind}/{id}", responses=_NOT_FOUND)
    def job(kind: Kind, job_id: JobId) -> JobOut:
        """A job: status, attempts, times, parameters and the last line of its log."""
        return _job_out(service, kind, job_id)

    @router.post("/{kind}/{id}/stop", responses=_NOT_FOUND)
    def stop(kind: Kind, job_id: JobId) -> JobStopped:
        """Stops a job: a waiting one at once, a running one at its next transition."""
        return JobStopped(id=job_id, kind=kind, status=service.stop(kind, job_id))

    @router.get("/{kind}/{id}/log", responses=_LOG_TEXT, response_class=Response)
    def kind_log(kind: Kind, job_id: JobId, offset: _Offset = 0) -> Response:
        """A job's log as text, from byte ``offset``."""
        return _log(service, kind, job_id, offset)

    return router


_Offset = Annotated[int, Query(ge=0, le=2**62, description="Byte of the log to start at")]


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


def _job_out(service: JobService, kind: str, job_id: int) -> JobOut:
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


def _open_router(service: JobService, metrics: ServiceMetrics) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/api/stats",
        dependencies=[_AUTH],
        responses=_ERRORS,
        tags=["service"],
    )
    def stats() -> dict[str, PoolStatsOut]:
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
        tags=["service"],
    )
    def healthz() -> JSONResponse:
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
        tags=["service"],
    )
    def prometheus() -> Response:
        """Prometheus text format. No auth."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


# -- errors ----------------------------------------------------------------------------------


def _field(loc: tuple[int | str, ...]) -> str:
    """``("body", "tags", 3)`` → ``tags[3]``; a bare source (``body``) stays."""
    parts = list(loc[1:]) if len(loc) > 1 else list(loc)
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]" if text else "body"
        else:
            text += f".{part}" if text else str(part)
    return text or "body"


def _add_error_handlers(app: FastAPI) -> None:
    def handle(exc_class: type[Exception]) -> Callable[[Any], Any]:
        def register(func: Callable[[Request, Any], Response]) -> Any:
            app.add_exception_handler(exc_class, func)
            return func

        return register

    @handle(RequestValidationError)
    def invalid(_request: Request, exc: RequestValidationError) -> Response:
        errors = []
        for error in exc.errors():
            loc = tuple(error.get("loc", ()))
            field = "body" if error.get("type") == "json_invalid" else _field(loc)
            message = str(error.get("msg", "invalid"))
            if error.get("type") == "json_invalid":
                message = "the body is not valid JSON"
            elif error.get("type") == "missing" and len(loc) == 1:
                message = "a JSON body is required"
            elif error.get("type") == "literal_error" and isinstance(error.get("input"), str):
                # Only choices are echoed: other inputs may be secrets.
                message = f"{message}, not {str(error['input'])[:64]!r}"
            errors.append(FieldError(field=field, message=message))
        first = errors[0] if errors else FieldError(field="body", message="invalid request")
        return error_response(400, f"{first.field}: {first.message}", first.field, errors)

    @handle(Problem)
    def problem(_request: Request, exc: Problem) -> Response:
        return error_response(exc.code, exc.message, exc.field)

    @handle(UnknownKind)
    def unknown_kind(_request: Request, exc: UnknownKind) -> Response:
        return error_response(404, str(exc), "kind")

    @handle(InvalidRequest)
    def bad_request(_request: Request, exc: InvalidRequest) -> Response:
        return error_response(400, str(exc), exc.field)

    @handle(NotFound)
    def not_found(_request: Request, exc: NotFound) -> Response:
        return error_response(404, str(exc), "id")

    @handle(StatusConflict)
    def conflict(_request: Request, exc: StatusConflict) -> Response:
        return error_response(409, str(exc))

    @handle(ServiceNotRunning)
    def not_running(_request: Request, exc: ServiceNotRunning) -> Response:
        return error_response(503, str(exc), headers={"Retry-After": "5"})

    @handle(RegistryError)
    def registry_failed(_request: Request, exc: RegistryError) -> Response:
        return error_response(502, f"the source registry failed: {exc}")

    @handle(sqlalchemy.exc.IntegrityError)
    def integrity(_request: Request, exc: sqlalchemy.exc.IntegrityError) -> Response:
        return error_response(409, "the change conflicts with another row (a name already taken?)")

    def unavailable(request: Request, exc: Exception) -> Response:
        # The driver's first line only: SQLAlchemy's text goes on with the statement and
        # its parameters.
        cause = _first_line(getattr(exc, "orig", None) or exc)
        logger.warning(
            "{} {}: the database is unavailable: {}", request.method, request.url.path, cause
        )
        return error_response(
            503,
            f"the database is unavailable ({cause}); try again later",
            headers={"Retry-After": "5"},
        )

    for exc_class in _DATABASE_UNAVAILABLE:
        app.add_exception_handler(exc_class, unavailable)

    @handle(HTTPException)
    def http_error(_request: Request, exc: HTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)

    @handle(JobServiceError)
    def failed(request: Request, exc: JobServiceError) -> Response:
        logger.opt(exception=exc).error("{} {} failed: {}", request.method, request.url.path, exc)
        return error_response(500, f"the request failed: {exc}")

    @handle(Exception)
    def crashed(request: Request, exc: Exception) -> Response:
        logger.opt(exception=exc).error(
            "{} {} crashed: {!r}", request.method, request.url.path, exc
        )
        return error_response(500, "internal error; the service's log has the details")


#: What a database that is down, unreachable, locked past the busy timeout or gone
#: raises, through SQLAlchemy or straight from the driver (the hot path's statements).
_DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    sqlite3.OperationalError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with validation errors documented as the 400 they are."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                operation.get("responses", {}).pop("422", None)
        components = schema.get("components", {}).get("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
    return app.openapi_schema
