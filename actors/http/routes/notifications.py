"""The registry's notifications (``POST /api/notifications/registry``): Docker
Distribution's ``notifications.endpoints`` post its events here, and pushes and
deletions queue replication and scan jobs (:mod:`model.triggers`).

Not behind the UI's ``secret`` cookie: the registry sends a header configured on both
sides, ``Authorization: Bearer <notification_token>``, compared in constant time; no
token set, the route answers 404. The answer comes as soon as the jobs are queued
(they run later), so the registry's queue of events never backs up behind a job.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from loguru import logger
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from actors.http.deps import ServiceDep
from actors.http.errors import error_response
from actors.http.schemas import ErrorBody
from model.triggers import parse_envelope, queue_events

__all__ = ["OWN_AUTH_PATHS", "PATH", "NotificationsQueued", "router"]

#: Where the registry posts its events.
PATH = "/api/notifications/registry"
#: Paths that check their own credentials rather than the UI's cookie.
OWN_AUTH_PATHS = frozenset({PATH})

_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="notification_token",
    description="The notification_token setting, sent by the registry's endpoint headers",
)
#: The challenge of a 401 (RFC 6750).
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="jobservice notifications"'}


class NotificationsQueued(BaseModel):
    """What one envelope of events queued."""

    jobs: dict[str, list[int]] = Field(
        description="Ids of the jobs queued, per kind (replication, scan)"
    )
    ignored: int = Field(description="Events that queue nothing (pulls, blobs, no policy, …)")
    duplicates: int = Field(description="Events whose jobs were queued at an earlier delivery")


router = APIRouter(prefix="/api/notifications", tags=["notifications"])


@router.post(
    "/registry",
    response_model=NotificationsQueued,
    responses={
        400: {"model": ErrorBody, "description": "Not the registry's event envelope"},
        401: {"model": ErrorBody, "description": "The bearer token is missing or wrong"},
        404: {"model": ErrorBody, "description": "No notification_token is set"},
        413: {"model": ErrorBody, "description": "The request body is too large"},
        503: {"model": ErrorBody, "description": "The service or its database is down"},
    },
)
async def registry_events(
    request: Request,
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
) -> Any:
    """Docker Distribution's events (body ``{"events": [...]}``, Content-Type
    ``application/vnd.docker.distribution.events.v1+json``; read as JSON whatever the
    type): a tag pushed is
    transferred by the project's policies with ``on_push`` and scanned when the project
    has ``auto_scan``; a deletion is replicated by those with ``on_deletion``. An event
    delivered again queues nothing more."""
    expected = service.settings.notification_token
    if expected is None:
        return error_response(
            404,
            "registry notifications are off: set the notification_token setting, and "
            "send it from the registry as the header Authorization: Bearer <token>",
            "notification_token",
        )
    sent = "authorization" in request.headers
    refused = _refusal(credentials, sent, expected.get_secret_value())
    if refused is not None:
        client = request.client.host if request.client else "?"
        logger.warning("registry notification from {} refused: {}", client, refused)
        return error_response(401, refused, "authorization", headers=_CHALLENGE)
    events = parse_envelope(await request.body())
    queued = await run_in_threadpool(queue_events, service.store, events)
    if queued.kinds:
        service.wake(queued.kinds)
    return NotificationsQueued(
        jobs=queued.jobs, ignored=queued.ignored, duplicates=queued.duplicates
    )


def _refusal(
    credentials: HTTPAuthorizationCredentials | None, sent: bool, token: str
) -> str | None:
    """Why the request's bearer token is not ``token`` (never quoting either), or None.
    ``sent``: whether an ``Authorization`` header came at all."""
    if credentials is None and sent:
        return "the header Authorization is not 'Bearer <notification_token>'"
    if credentials is None:
        return "the header Authorization: Bearer <notification_token> is missing"
    given = credentials.credentials.encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, token.encode()):
        return "the bearer token is wrong: it must be the notification_token setting"
    return None
