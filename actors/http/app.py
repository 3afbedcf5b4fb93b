"""The HTTP API: Harbor 1.4 jobservice's routes (same paths, bodies and status codes) and
the added ones, as a thin FastAPI layer over :class:`JobService`.

Every request but ``/healthz``, ``/metrics`` and the OpenAPI document needs the cookie
``secret`` equal to the ``ui_secret`` setting (missing: 401, wrong: 403), but the
registry's notifications, which carry a bearer token of their own. Bad input
always gets a 4xx JSON :class:`~actors.http.schemas.ErrorBody` naming the field; bodies
above ``max_body_bytes`` get 413. Handlers are plain functions: FastAPI runs them in
its thread pool, since the service's calls block on the database.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from actors.http.errors import add_error_handlers
from actors.http.metrics import ServiceMetrics
from actors.http.middleware import BodyLimit, DatabaseGuard, RequestMetrics, SecretCookieAuth
from actors.http.routes import jobs, notifications, resources
from actors.http.routes import service as service_routes
from actors.http.ui import Dashboard
from actors.service import JobService
from model.errors import ConfigError

__all__ = ["create_app"]


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
    # What the routes' dependencies (actors.http.deps) hand them.
    app.state.service = service
    app.state.metrics = metrics
    app.include_router(jobs.router)
    app.include_router(resources.router)
    app.include_router(service_routes.router)
    app.include_router(notifications.router)
    add_error_handlers(app)
    # The last added is the outermost: metrics see every answer, auth runs before a
    # body is read, and only a whole body reaches the database check and the routes.
    app.add_middleware(DatabaseGuard, problem=service.database_problem)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecretCookieAuth, secret=secret, own_auth=notifications.OWN_AUTH_PATHS)
    app.add_middleware(Dashboard, service=service, secret=secret, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _version() -> str:
    try:
        return version("jobservice")
    except PackageNotFoundError:
        return "0"


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
