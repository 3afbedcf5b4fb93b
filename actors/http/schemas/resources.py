"""Bodies of the resource routes: projects, targets, policies and schedules."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr

from actors.http.schemas._fields import (
    _NO_NUL,
    _PRINTABLE,
    Description,
    Id,
    Password,
    PolicyName,
    ProjectName,
    TargetName,
    TargetUrl,
    Username,
    _In,
    _Out,
)

# -- projects, targets, policies -------------------------------------------------------------


class ProjectIn(_In):
    name: ProjectName
    public: bool = False
    auto_scan: bool = Field(default=False, description="Scan every image pushed to it")


class ProjectUpdate(_In):
    name: ProjectName | None = None
    public: bool | None = None
    auto_scan: bool | None = None


class ProjectOut(_Out):
    id: int
    name: str
    public: bool
    auto_scan: bool


class TargetIn(_In):
    """A registry to replicate to. ``password`` is write-only."""

    name: TargetName
    url: TargetUrl
    username: Username = ""
    password: Password = SecretStr("")
    insecure: bool = False

    def plain(self) -> dict[str, Any]:
        """The arguments of :meth:`~model.catalog.Catalog.add_target`: the password in
        plain text."""
        return {**self.model_dump(), "password": self.password.get_secret_value()}


class TargetUpdate(_In):
    """Changes to a target; a field left out keeps its value (the password too)."""

    name: TargetName | None = None
    url: TargetUrl | None = None
    username: Username | None = None
    password: Password | None = None
    insecure: bool | None = None

    def plain(self) -> dict[str, Any]:
        """The arguments of :meth:`~model.catalog.Catalog.update_target`: the fields
        given, the password in plain text (None: kept)."""
        password = self.password.get_secret_value() if self.password is not None else None
        return {**self.model_dump(exclude_none=True), "password": password}


class TargetOut(_Out):
    id: int
    name: str
    url: str
    username: str
    has_password: bool
    insecure: bool
    creation_time: datetime
    update_time: datetime


CronText = Annotated[
    str,
    Field(
        max_length=1024,
        pattern=_NO_NUL,
        description="A cron expression of five fields ('0 2 * * *'), or Harbor's cron_str JSON",
    ),
]
TimeZone = Annotated[
    str, Field(min_length=1, max_length=64, pattern=_PRINTABLE, description="An IANA name")
]


class PolicyIn(_In):
    name: PolicyName
    project_id: Id
    target_id: Id
    description: Description = ""
    enabled: bool = True
    replicate_deletion: bool = False
    schedule: CronText | None = Field(default=None, description="Replicate on this schedule")
    timezone: TimeZone = "UTC"
    on_push: bool = Field(default=False, description="Replicate each tag pushed")
    on_delete: bool = Field(default=False, description="Replicate each deletion")


class PolicyUpdate(_In):
    """Changes to a policy; a field left out keeps its value. ``schedule`` ``""``
    removes the schedule."""

    name: PolicyName | None = None
    project_id: Id | None = None
    target_id: Id | None = None
    description: Description | None = None
    enabled: bool | None = None
    replicate_deletion: bool | None = None
    schedule: CronText | None = None
    timezone: TimeZone | None = None
    on_push: bool | None = None
    on_delete: bool | None = None


class PolicyOut(_Out):
    id: int
    name: str
    project_id: int
    target_id: int
    description: str
    enabled: bool
    replicate_deletion: bool
    schedule: str | None
    timezone: str
    next_fire_at: datetime | None
    on_push: bool
    on_delete: bool
    creation_time: datetime
    update_time: datetime


class ScanScheduleIn(_In):
    """Scans every tag of the repositories matching ``pattern`` on a schedule."""

    pattern: Annotated[
        str, Field(min_length=3, max_length=256, pattern=_PRINTABLE, examples=["library/*"])
    ]
    schedule: CronText
    timezone: TimeZone = "UTC"


class ScheduleOut(_Out):
    id: int
    kind: Literal["replication", "scan"]
    policy_id: int | None
    pattern: str
    schedule: str
    timezone: str
    enabled: bool
    next_fire_at: datetime | None
    last_fired_at: datetime | None
