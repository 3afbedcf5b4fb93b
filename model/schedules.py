"""Schedules: when a policy's run or a scan pattern fires, and what it queues.

A schedule is a cron expression (five fields, parsed by ``croniter``) read in a time
zone (IANA name, ``zoneinfo``), or Harbor 1.4's ``cron_str`` JSON form
(``{"kind": "Scheduled", "schedule_param": {"type": "Daily"|"Weekly", "weekday": 1-7,
"offtime": seconds after midnight UTC}}``, or the ``schedule_param`` object alone).

Its next fire time lives in its row (``schedule.next_fire_at``, UTC). Firing a schedule
is one transaction: the guarded move of ``next_fire_at`` from the slot fired to the
next slot after now, and the jobs it queues (:func:`fire`). So a restart neither misses
nor repeats a run, two nodes never fire one slot, and a schedule whose slots passed
while no node ran fires once, not once per missed slot.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from model.db import Guard, Store
from model.db.tables import ReplicationPolicy, Schedule, utcnow
from model.errors import InvalidRequest
from model.operation import Operation
from model.replication import replication_rows, source_registry
from model.scan import scan_row
from model.settings import Settings
from model.stamps import aware

__all__ = [
    "KINDS",
    "Cron",
    "check_pattern",
    "due",
    "fire",
    "next_fire",
    "parse",
]

#: The kinds of schedule: a replication policy's run, or scans of a repository pattern.
KINDS = ("replication", "scan")


@dataclass(frozen=True)
class Cron:
    """A checked schedule: a five-field cron ``expression`` in ``timezone``."""

    expression: str
    timezone: str

    def next_after(self, moment: datetime) -> datetime:
        """The first slot strictly after ``moment``, in UTC."""
        zone = ZoneInfo(self.timezone)
        local = moment.astimezone(zone)
        found = croniter(self.expression, local).get_next(datetime)
        assert isinstance(found, datetime)
        return found.astimezone(UTC)


def parse(cron: str, timezone: str = "UTC") -> Cron:
    """Checks a schedule; raises :class:`InvalidRequest` naming ``schedule`` or
    ``timezone``. Harbor's ``cron_str`` JSON form is turned into its cron expression
    (in UTC, as Harbor reads it)."""
    if not isinstance(cron, str) or not cron.strip():
        raise InvalidRequest("schedule", "must be a cron expression such as '0 2 * * *'")
    text = cron.strip()
    if text.startswith("{"):
        text, timezone = _harbor(text), "UTC"
    if len(text) > 256:
        raise InvalidRequest("schedule", "is longer than 256 characters")
    if len(text.split()) != 5 or not croniter.is_valid(text):
        raise InvalidRequest(
            "schedule",
            f"{cron!r} is not a cron expression of five fields "
            "(minute hour day-of-month month day-of-week), e.g. '0 2 * * *'",
        )
    if not isinstance(timezone, str) or not timezone:
        raise InvalidRequest("timezone", "must be a time zone name such as 'UTC'")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(
            "timezone", f"unknown time zone {timezone!r} (an IANA name such as 'Europe/Paris')"
        ) from None
    return Cron(text, timezone)


def _harbor(text: str) -> str:
    """Harbor's ``cron_str`` JSON as a cron expression."""
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidRequest("schedule", "starts with '{' but is not JSON") from None
    if isinstance(value, dict) and "schedule_param" in value:
        value = value["schedule_param"]
    if not isinstance(value, dict):
        raise InvalidRequest("schedule", "Harbor's form needs a schedule_param object")
    fields = {str(k).lower(): v for k, v in value.items()}
    kind = str(fields.get("type", "")).lower()
    offtime = fields.get("offtime", 0)
    if not isinstance(offtime, int) or not 0 <= offtime < 86_400:
        raise InvalidRequest("schedule", "offtime must be seconds after midnight (0-86399)")
    minute, hour = (offtime % 3600) // 60, offtime // 3600
    if kind == "daily":
        return f"{minute} {hour} * * *"
    if kind == "weekly":
        weekday = fields.get("weekday")
        if not isinstance(weekday, int) or not 1 <= weekday <= 7:
            raise InvalidRequest("schedule", "weekday must be 1 (Monday) to 7 (Sunday)")
        return f"{minute} {hour} * * {weekday % 7}"
    raise InvalidRequest(
        "schedule", f"Harbor's schedule type must be Daily or Weekly, not {kind!r}"
    )


def check_pattern(pattern: str) -> str:
    """A scan schedule's repository pattern (``library/*``, ``library/app``); raises
    :class:`InvalidRequest` naming ``pattern``."""
    if not isinstance(pattern, str) or "/" not in pattern or len(pattern) > 256:
        raise InvalidRequest("pattern", "must be <project>/<repository>, with * and ? as wildcards")
    if pattern.split("/", 1)[0] in ("", "*") or any(c.isspace() for c in pattern):
        raise InvalidRequest("pattern", "must name its project (no wildcard or blank in it)")
    return pattern


def next_fire(cron: str, timezone: str, after: datetime | None = None) -> datetime:
    """The next slot of a schedule after ``after`` (default now), in UTC."""
    return parse(cron, timezone).next_after(after or utcnow())


def due(store: Store, now: datetime) -> list[Schedule]:
    """The enabled schedules whose next fire time has come, oldest first (listed only
    when one has: every poll asks)."""
    if not store.schedule_due(now):
        return []
    return [
        row
        for row in store.list_rows(Schedule, enabled=True)
        if row.next_fire_at is not None and aware(row.next_fire_at) <= now
    ]


def fire(store: Store, settings: Settings, schedule: Schedule, now: datetime) -> list[int] | None:
    """Fires one due schedule: queues its jobs and moves its next fire time past
    ``now``, in one transaction guarded on the slot it fires. Returns the ids queued,
    or None when another node fired that slot. Raises what listing the source
    registry raises (nothing is written then: the schedule stays due)."""
    assert schedule.id is not None and schedule.next_fire_at is not None
    cron = parse(schedule.cron, schedule.timezone)
    table, rows, kind = _jobs(store, settings, schedule)
    sql_time = store.sql_time
    guard = (
        Guard.SCHEDULE_SLOT,
        {
            "id": schedule.id,
            "due": sql_time(aware(schedule.next_fire_at)),
            "next": sql_time(cron.next_after(now)),
            "yes": True,
        },
    )
    queued = store.queue([(table, rows, kind)], guard)
    return None if queued is None else queued[0]


def _jobs(
    store: Store, settings: Settings, schedule: Schedule
) -> tuple[str, list[dict[str, Any]], str]:
    if schedule.kind == "replication":
        assert schedule.policy_id is not None
        policy = store.find(ReplicationPolicy, schedule.policy_id)
        if policy is None or policy.deleted or not policy.enabled:
            return "replication_job", [], "replication"
        rows = replication_rows(
            store, settings, schedule.policy_id, None, (), Operation.TRANSFER.value
        )
        return "replication_job", rows, "replication"
    project = schedule.pattern.split("/", 1)[0]
    rows = []
    with source_registry(settings) as client:
        for repository in client.catalog(prefix=f"{project}/"):
            if fnmatch.fnmatchcase(repository, schedule.pattern):
                rows += [scan_row(repository, tag) for tag in client.list_tags(repository)]
    return "img_scan_job", rows, "scan"
