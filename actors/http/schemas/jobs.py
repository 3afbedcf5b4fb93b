"""Bodies of the job routes: the original's (as Harbor 1.4's client sends them) and ours."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from actors.http.schemas._fields import (
    Id,
    Repository,
    Tag,
    _Out,
)
from model.operation import Operation

# -- the original's routes ----------------------------------------------------------------


class _OriginalIn(BaseModel):
    """A request body of one of the original's routes: strict types, unknown fields
    ignored (the original's Go decoder skipped them; Harbor's UI may send more)."""

    model_config = ConfigDict(extra="ignore", strict=True)


def _zero_is_absent(value: object) -> object:
    """Go's zero value of a string, ``""``, is what Harbor sends for "not given"."""
    return None if value == "" else value


# Lax for the enum only: a request's JSON names the operation by its value.
_Operation = Annotated[Operation, Field(strict=False)]


class ReplicationRequest(_OriginalIn):
    """``POST /api/jobs/replication``: replicate one repository of a policy, or (without
    ``repository``) every repository of its project. ``""`` and ``null`` read as left
    out, as in the original: no repository is the whole project (then ``transfer`` of
    every tag, whatever ``operation`` and ``tags`` say), no operation is ``transfer``, no
    tags are every tag."""

    policy_id: Id
    repository: Annotated[
        Repository | None,
        BeforeValidator(_zero_is_absent, json_schema_input_type=Repository | Literal[""] | None),
    ] = None
    operation: Annotated[
        _Operation | None,
        BeforeValidator(_zero_is_absent, json_schema_input_type=_Operation | Literal[""] | None),
    ] = None
    tags: Annotated[list[Tag], Field(max_length=1000)] | None = None


class ReplicationAction(_OriginalIn):
    """``POST /api/jobs/replication/actions``: ``stop`` every job of a policy."""

    policy_id: Id
    action: Literal["stop"]


class ScanRequest(_OriginalIn):
    """``POST /api/jobs/scan``: scan one image of the source registry (the digest is
    read from the registry, as the original did: a ``digest`` sent is ignored)."""

    repository: Repository
    tag: Tag


class JobIds(BaseModel):
    job_ids: list[int]


class ScanJobId(BaseModel):
    job_id: int


# -- jobs -----------------------------------------------------------------------------------


class JobOut(BaseModel):
    """One job: its status, parameters (never a secret) and the last line of its log."""

    id: int
    kind: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    creation_time: datetime
    update_time: datetime
    parameters: dict[str, Any]
    progress: str | None = Field(description="The last line of the job's log, if it has one")


class JobStopped(BaseModel):
    id: int
    kind: str
    status: str = Field(description="The status the job had when the stop was asked")


class Finding(_Out):
    vulnerability_id: str
    package: str
    version: str
    fixed_version: str
    severity: int
    description: str
    link: str


class ImageScan(BaseModel):
    """The latest scan of an image: its overview and every vulnerability found."""

    image_digest: str
    scan_job_id: int
    severity: int
    components_overview: Any
    details_key: str
    creation_time: datetime
    update_time: datetime
    findings: list[Finding]
