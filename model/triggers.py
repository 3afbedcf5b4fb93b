"""What the registry's own events become: Docker Distribution's notification envelope
(``application/vnd.docker.distribution.events.v1+json``, its ``notifications.endpoints``)
read, and the jobs each event queues.

- A manifest pushed with a tag (``push``, a manifest media type, ``target.tag``): a
  ``transfer`` of that tag for every enabled policy of the repository's project with an
  immediate trigger ``on_push``, and a scan of the image (with its digest) when the
  project has ``auto_scan``.
- A deletion (``delete``): a ``delete`` job for every enabled policy of the project
  with ``on_deletion``, naming what the event names: the digest of a manifest deleted
  by digest (distribution 2.8's ``ManifestDeleted``, as ``skopeo delete`` causes), a
  tag (``TagDeleted``), or, for a repository deleted whole, nothing (every tag goes).
- Anything else queues nothing: pulls, mounts, blobs, manifests pushed by digest only
  (an index's children), repositories of a project without such policies.

Each event's jobs are inserted in one transaction with the event's first sighting
(:attr:`model.db.Guard.FIRST_SIGHTING`, a row of ``registry_event``): an event delivered twice (the
registry retries until it sees a 2xx) queues its jobs once. The deletions of one
request share one sighting: distribution 2.8 answers a ``DELETE`` of a manifest with a
``ManifestDeleted`` event then one ``TagDeleted`` per tag that pointed at it, and the
first (the digest, which covers the tags) is the one acted on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from loguru import logger

from model.db import Guard, Store
from model.db.tables import Project, ReplicationImmediateTrigger, ReplicationPolicy
from model.errors import InvalidRequest
from model.jobs import RepJob, ScanJob
from model.names import check_repository, check_tags
from model.operation import Operation
from model.registry import MANIFEST_MEDIA_TYPES, is_digest

__all__ = [
    "EVENTS_MEDIA_TYPE",
    "Action",
    "Event",
    "EventJobs",
    "Queued",
    "jobs_of",
    "parse_envelope",
    "queue_events",
]

#: The envelope's media type (the registry's ``Content-Type``).
EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
#: Longest event id kept (the ``registry_event.id`` column).
MAX_EVENT_ID_CHARS = 128
#: Prefix of the sighting shared by the deletions of one registry request.
_REQUEST_KEY = "request:"


class Action(StrEnum):
    """The ``action`` of an event, as distribution names them."""

    #: A manifest or a blob was pushed.
    PUSH = "push"
    #: A manifest or a blob was read.
    PULL = "pull"
    #: A blob was mounted from another repository.
    MOUNT = "mount"
    #: A manifest (by digest), a tag, a blob or a repository was deleted.
    DELETE = "delete"


@dataclass(frozen=True)
class Event:
    """One event of the envelope: the fields this service reads."""

    #: The event's unique id (a UUID): what makes a second delivery a duplicate.
    id: str
    action: str
    repository: str
    media_type: str = ""
    tag: str = ""
    digest: str = ""
    #: The id of the registry request that caused the event ("" when not sent).
    request_id: str = ""

    def __str__(self) -> str:
        name = self.repository + (f":{self.tag}" if self.tag else "")
        name += f"@{self.digest}" if self.digest else ""
        return f"registry event {self.id} ({self.action} {name})"

    @property
    def sighting(self) -> str:
        """The ``registry_event`` id recorded with this event's jobs: the event's own,
        or for a deletion the request's, which its other deletions share."""
        if self.action == Action.DELETE and self.request_id:
            key = _REQUEST_KEY + self.request_id
            if len(key) <= MAX_EVENT_ID_CHARS:
                return key
        return self.id


@dataclass(frozen=True)
class EventJobs:
    """The jobs one event queues (rows as :meth:`Store.queue` takes them), or why none."""

    event: Event
    replication: list[dict[str, Any]] = field(default_factory=list)
    scan: list[dict[str, Any]] = field(default_factory=list)
    #: Why nothing is queued; "" when something is.
    ignored: str = ""


@dataclass
class Queued:
    """What an envelope queued: job ids per kind, and the events that queued nothing."""

    jobs: dict[str, list[int]] = field(default_factory=lambda: {"replication": [], "scan": []})
    #: Events with nothing to do (pulls, blobs, projects without such policies, …).
    ignored: int = 0
    #: Events (or deletions of one request) whose jobs were queued already.
    duplicates: int = 0

    @property
    def kinds(self) -> list[str]:
        """The kinds that got jobs (their pools to wake)."""
        return [kind for kind, ids in self.jobs.items() if ids]


# -- reading the envelope ------------------------------------------------------------


def parse_envelope(body: bytes) -> list[Event]:
    """The events of a notification body (``{"events": [...]}``), checked.

    Raises :class:`InvalidRequest` naming the first part at fault (``body``,
    ``events``, ``events[2].target.tag``, …): nothing of such a body is acted on."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(
            "body", f"not JSON ({exc}): send the registry's event envelope"
        ) from None
    if not isinstance(document, dict):
        raise InvalidRequest("body", 'must be the registry\'s event envelope {"events": [...]}')
    events = document.get("events")
    if events is None:
        raise InvalidRequest("events", 'is missing: the envelope is {"events": [...]}')
    if not isinstance(events, list):
        raise InvalidRequest("events", "must be a list of events")
    return [_event(item, f"events[{index}]") for index, item in enumerate(events)]


def _event(item: object, where: str) -> Event:
    if not isinstance(item, dict):
        raise InvalidRequest(where, "must be an event object")
    event_id = _text(item, "id", where, required=True)
    if len(event_id) > MAX_EVENT_ID_CHARS:
        raise InvalidRequest(f"{where}.id", f"must be at most {MAX_EVENT_ID_CHARS} characters")
    action = _text(item, "action", where, required=True)
    target = item.get("target")
    if not isinstance(target, dict):
        raise InvalidRequest(f"{where}.target", "must be an object (what the event is about)")
    at = f"{where}.target"
    repository = check_repository(
        _text(target, "repository", at, required=True), f"{at}.repository"
    )
    tag = _text(target, "tag", at)
    if tag:
        check_tags([tag], f"{at}.tag")
    digest = _text(target, "digest", at)
    if digest and not is_digest(digest):
        raise InvalidRequest(f"{at}.digest", f"{digest[:80]!r} is not a digest")
    request = item.get("request")
    request_id = _text(request, "id", f"{where}.request") if isinstance(request, dict) else ""
    return Event(
        id=event_id,
        action=action,
        repository=repository,
        media_type=_text(target, "mediaType", at),
        tag=tag,
        digest=digest,
        request_id=request_id,
    )


def _text(parent: Mapping[str, Any], name: str, where: str, *, required: bool = False) -> str:
    value = parent.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise InvalidRequest(f"{where}.{name}", "must be a non-empty string")
    return value


# -- what an event queues --------------------------------------------------------------


def jobs_of(store: Store, event: Event) -> EventJobs:
    """The jobs ``event`` queues, from the project of its repository (its first path
    component), the project's enabled policies and their immediate triggers."""
    if event.action == Action.PUSH:
        if event.media_type not in MANIFEST_MEDIA_TYPES:
            return EventJobs(event, ignored=f"not a manifest ({event.media_type or 'no type'})")
        if not event.tag:
            return EventJobs(event, ignored="a manifest pushed by digest only")
    elif event.action != Action.DELETE:
        return EventJobs(event, ignored=f"a {event.action}")
    if "/" not in event.repository:
        return EventJobs(event, ignored="a repository in no project")
    name = event.repository.split("/", 1)[0]
    projects = store.list_rows(Project, name=name)
    if not projects:
        return EventJobs(event, ignored=f"no project {name!r}")
    project = projects[0]
    on_push, on_deletion = _triggered(store, project)
    if event.action == Action.PUSH:
        transfers = [
            _replication(p, event.repository, Operation.TRANSFER, [event.tag]) for p in on_push
        ]
        scans = (
            [{"repository": event.repository, "tag": event.tag, "digest": event.digest}]
            if project.auto_scan
            else []
        )
        if not transfers and not scans:
            return EventJobs(event, ignored=f"project {name!r} replicates no push, scans none")
        return EventJobs(event, transfers, scans)
    # A manifest deleted by digest, a tag, or the whole repository (nothing named).
    names = [event.digest] if event.digest else [event.tag] if event.tag else []
    deletes = [_replication(p, event.repository, Operation.DELETE, names) for p in on_deletion]
    if not deletes:
        return EventJobs(event, ignored=f"project {name!r} replicates no deletion")
    return EventJobs(event, deletes)


def _triggered(
    store: Store, project: Project
) -> tuple[list[ReplicationPolicy], list[ReplicationPolicy]]:
    """The project's enabled policies with an immediate trigger on push, and those with
    one on deletion."""
    on_push: list[ReplicationPolicy] = []
    on_deletion: list[ReplicationPolicy] = []
    for policy in store.list_rows(
        ReplicationPolicy, project_id=project.id, enabled=True, deleted=False
    ):
        triggers = store.list_rows(ReplicationImmediateTrigger, policy_id=policy.id)
        if any(t.on_push for t in triggers):
            on_push.append(policy)
        if any(t.on_deletion for t in triggers):
            on_deletion.append(policy)
    return on_push, on_deletion


def _replication(
    policy: ReplicationPolicy, repository: str, operation: str, names: Sequence[str]
) -> dict[str, Any]:
    return {
        "repository": repository,
        "policy_id": policy.id,
        "operation": operation,
        "tags": list(names),
    }


def queue_events(store: Store, events: Sequence[Event]) -> Queued:
    """Queues the jobs of each event, each event's in one transaction with its sighting
    (nothing for one seen before). Wake the pools of :attr:`Queued.kinds` afterwards."""
    queued = Queued()
    for event in events:
        jobs = jobs_of(store, event)
        if jobs.ignored:
            queued.ignored += 1
            logger.debug("{}: ignored, {}", event, jobs.ignored)
            continue
        found = store.queue(
            [
                (RepJob.table, jobs.replication, "replication"),
                (ScanJob.table, jobs.scan, "scan"),
            ],
            guard=(Guard.FIRST_SIGHTING, {"id": event.sighting}),
        )
        if found is None:
            queued.duplicates += 1
            logger.info("{}: seen before ({}), nothing queued again", event, event.sighting)
            continue
        replications, scans = found
        queued.jobs["replication"] += replications
        queued.jobs["scan"] += scans
        logger.info(
            "{}: queued replication jobs {} and scan jobs {}",
            event,
            replications or "-",
            scans or "-",
        )
    return queued
