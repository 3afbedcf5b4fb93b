"""The HTTP API's errors: every exception a route may raise, mapped to its status and
the field it names in one table (:data:`ANSWERS`), answered as a JSON
:class:`~actors.http.schemas.ErrorBody`; and the documented error answers of routes."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import psycopg
import sqlalchemy.exc
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loguru import logger
from starlette.exceptions import HTTPException

from actors.http.schemas import ErrorBody, FieldError
from model.catalog import InUse, NameTaken
from model.errors import (
    InvalidRequest,
    JobServiceError,
    NotFound,
    ServiceNotRunning,
    StatusConflict,
    UnknownKind,
)
from model.registry import RegistryError
from model.scan import ImageNotFound

__all__ = [
    "ANSWERS",
    "BAD_GATEWAY",
    "ERRORS",
    "IN_USE",
    "LOG_TEXT",
    "NOT_FOUND",
    "Answer",
    "Problem",
    "add_error_handlers",
    "answer",
    "error_field",
    "error_response",
]

#: Headers of a 503: when to ask again, in seconds.
RETRY_LATER = {"Retry-After": "5"}


class Problem(Exception):
    """An answer other than 2xx that no domain error names (a job without a log),
    raised by a route."""

    def __init__(self, code: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def error_response(
    code: int,
    message: str,
    field: str | None = None,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The JSON answer of an error."""
    body = ErrorBody(code=code, message=message, field=field, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=code, headers=headers)


class Answer(NamedTuple):
    """How the API answers one class of exception."""

    #: The status code; None: the exception's own ``code``.
    status: int | None
    #: The input the answer names, from the exception.
    field: Callable[[Any], str | None] = lambda _exc: None
    #: The message: a text, one made of the exception, or None: the exception's own text.
    message: str | Callable[[Any], str] | None = None

    def text(self, exc: Exception) -> str:
        """The message answered for ``exc``."""
        if callable(self.message):
            return self.message(exc)
        return self.message or str(exc)


def _named(field: str) -> Callable[[Any], str | None]:
    return lambda _exc: field


#: What the API answers for each exception a route may raise, looked up along the
#: exception's classes (a subclass's own line first).
ANSWERS: dict[type[Exception], Answer] = {
    Problem: Answer(None, lambda exc: exc.field),
    UnknownKind: Answer(404, _named("kind")),
    InvalidRequest: Answer(400, lambda exc: exc.field),
    NotFound: Answer(404, lambda exc: exc.field or "id"),
    ImageNotFound: Answer(
        404,
        _named("tag"),
        lambda exc: f"image {exc.repository}:{exc.reference} is not in the source registry",
    ),
    NameTaken: Answer(409, _named("name")),
    InUse: Answer(409, _named("id")),
    StatusConflict: Answer(409),
    ServiceNotRunning: Answer(503),
    sqlalchemy.exc.IntegrityError: Answer(
        409, message="the change conflicts with another row (a name already taken?)"
    ),
}

#: What a database that is down, unreachable, locked past the busy timeout or gone
#: raises, through SQLAlchemy or straight from the driver (the hot path's statements).
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    sqlite3.OperationalError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


def add_error_handlers(app: FastAPI) -> None:
    """Registers the answers of every error on ``app``."""
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    for exc_class in ANSWERS:
        app.add_exception_handler(exc_class, _answer)
    for exc_class in DATABASE_UNAVAILABLE:
        app.add_exception_handler(exc_class, _unavailable)
    app.add_exception_handler(RegistryError, _registry_failed)
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(JobServiceError, _failed)
    app.add_exception_handler(Exception, _crashed)


def answer(exc: Exception) -> Answer | None:
    """How the API answers ``exc`` (its class's line in :data:`ANSWERS`, else the
    nearest base's), or None: not a refusal the table names."""
    return next((ANSWERS[cls] for cls in type(exc).__mro__ if cls in ANSWERS), None)


def error_field(exc: Exception) -> str | None:
    """The input the API's answer to ``exc`` names, if any (:data:`ANSWERS`)."""
    found = answer(exc)
    return found.field(exc) if found is not None else None


def _answer(_request: Request, exc: Exception) -> Response:
    found = answer(exc)
    assert found is not None  # registered for the classes of ANSWERS only
    code = found.status if found.status is not None else int(getattr(exc, "code", 500))
    headers = RETRY_LATER if code == 503 else None
    return error_response(code, found.text(exc), found.field(exc), headers=headers)


#: Pydantic's error types for a body that is not an object.
_NOT_AN_OBJECT = frozenset({"model_type", "model_attributes_type", "dict_type"})


def _invalid(_request: Request, exc: RequestValidationError) -> Response:
    errors = []
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        field = "body" if error.get("type") == "json_invalid" else _field(loc)
        message = str(error.get("msg", "invalid"))
        if error.get("type") == "json_invalid":
            message = "the body is not valid JSON"
        elif error.get("type") == "missing" and len(loc) == 1:
            message = "a JSON body is required"
        elif error.get("type") in _NOT_AN_OBJECT and len(loc) == 1:
            # Raw bytes: a body FastAPI did not decode, for want of a JSON Content-Type.
            message = (
                "send the body as JSON, with Content-Type: application/json"
                if isinstance(error.get("input"), bytes | str)
                else "the body must be a JSON object"
            )
        elif error.get("type") == "literal_error" and isinstance(error.get("input"), str):
            # Only choices are echoed: other inputs may be secrets.
            message = f"{message}, not {str(error['input'])[:64]!r}"
        errors.append(FieldError(field=field, message=message))
    first = errors[0] if errors else FieldError(field="body", message="invalid request")
    return error_response(400, f"{first.field}: {first.message}", first.field, errors)


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


def _unavailable(request: Request, exc: Exception) -> Response:
    # The driver's first line only: SQLAlchemy's text goes on with the statement and
    # its parameters.
    cause = _first_line(getattr(exc, "orig", None) or exc)
    logger.warning(
        "{} {}: the database is unavailable: {}", request.method, request.url.path, cause
    )
    return error_response(
        503, f"the database is unavailable ({cause}); try again later", headers=RETRY_LATER
    )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _registry_failed(_request: Request, exc: Exception) -> Response:
    return error_response(502, f"the source registry failed: {exc}")


def _http_error(_request: Request, exc: HTTPException) -> Response:
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


def _failed(request: Request, exc: Exception) -> Response:
    logger.opt(exception=exc).error("{} {} failed: {}", request.method, request.url.path, exc)
    return error_response(500, f"the request failed: {exc}")


def _crashed(request: Request, exc: Exception) -> Response:
    logger.opt(exception=exc).error("{} {} crashed: {!r}", request.method, request.url.path, exc)
    return error_response(500, "internal error; the service's log has the details")


# -- the error answers routes document (OpenAPI) ----------------------------------------

#: Every protected route's error answers.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad input; `field` names it"},
    401: {"model": ErrorBody, "description": "The cookie `secret` is missing"},
    403: {"model": ErrorBody, "description": "The cookie `secret` is wrong"},
    413: {"model": ErrorBody, "description": "The request body is too large"},
    503: {
        "model": ErrorBody,
        "description": "The job service is not running, or its database cannot be reached",
    },
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "Not found"}}
BAD_GATEWAY: dict[int | str, dict[str, Any]] = {
    502: {"model": ErrorBody, "description": "The source registry failed"}
}
IN_USE: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "A name is taken, or the row is in use"},
}
LOG_TEXT: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "The log"},
    **NOT_FOUND,
}
