"""The HTTP API's request and response bodies: strict pydantic models (no coercion, no
unknown fields), whose limits are the database's, so that input the schema accepts
never fails further down. A target's password is write-only: no output model has it.

The bodies of the original's routes read as the original read them (Go's decoder, which
Harbor 1.4's own client writes for): unknown fields ignored, and Go's zero values
(``""``, ``null``) taken as left out. Their types stay strict, as Go's decoder was."""

from __future__ import annotations

import urllib.parse
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

from model.catalog import MAX_TARGET_PASSWORD_BYTES, MAX_TARGET_URL_CHARS
from model.operation import Operation

__all__ = [
    "MAX_ID",
    "ErrorBody",
    "FieldError",
    "Health",
    "Id",
    "ImageScan",
    "JobIds",
    "JobOut",
    "JobStopped",
    "NodeLoad",
    "NodeOut",
    "NodeSummary",
    "NodesOut",
    "PolicyIn",
    "PolicyOut",
    "PolicyUpdate",
    "PoolStatsOut",
    "PoolTotals",
    "ProjectIn",
    "ProjectOut",
    "ProjectUpdate",
    "ReplicationAction",
    "ReplicationRequest",
    "ScanJobId",
    "ScanRequest",
    "StatsOut",
    "TargetIn",
    "TargetOut",
    "TargetUpdate",
    "check_target_url",
]

#: The largest id a table holds (PostgreSQL's ``integer``).
MAX_ID = 2**31 - 1
#: Bytes a target password may have: its ciphertext (``<enc-v2>`` or ``<enc-v1>``) must
#: fit Harbor 1.4's 128-character column.
MAX_PASSWORD_BYTES = MAX_TARGET_PASSWORD_BYTES

# The distribution spec's grammar (as model.names), for the OpenAPI document.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_PATTERN = rf"^{_COMPONENT}(?:/{_COMPONENT})*$"
TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
_NO_NUL = r"^[^\x00]*$"

# 1 to 65535, no leading zero (port 0 is no port a registry listens on).
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
# A path segment other than "." and "..": printable ASCII but "#", "/" and "?".
_SEGMENT = r'(?:[-!"$-,0->@-~][!"$-.0->@-~]*|\.[-!"$-,0->@-~][!"$-.0->@-~]*|\.\.[!"$-.0->@-~]+)?'
#: A registry URL as :func:`check_target_url` takes it (host names and IPv4 addresses).
TARGET_URL_PATTERN = rf"^https?://[A-Za-z0-9.-]+(?::{_PORT})?(?:/{_SEGMENT})*$"


def _json_integer(value: object) -> object:
    """JSON has one number type: ``3.0`` is the integer 3, as JSON Schema says; ``3.5``
    stays a float, and is refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Id = Annotated[int, Field(ge=0, le=MAX_ID), BeforeValidator(_json_integer)]
Name = Annotated[str, Field(min_length=1, pattern=_PRINTABLE)]
Repository = Annotated[str, Field(min_length=1, max_length=255, pattern=REPOSITORY_PATTERN)]
Tag = Annotated[str, Field(min_length=1, max_length=128, pattern=TAG_PATTERN)]
ProjectName = Annotated[str, Field(min_length=1, max_length=255, pattern=rf"^{_COMPONENT}$")]
TargetName = Annotated[Name, Field(max_length=64)]
PolicyName = Annotated[Name, Field(max_length=256)]
Description = Annotated[str, Field(max_length=2048, pattern=_NO_NUL)]
Username = Annotated[str, Field(max_length=255, pattern=_PRINTABLE)]


def check_target_url(value: str) -> str:
    """A registry URL: ``http`` or ``https``, a host, a port other than 0, no user
    info, query, fragment or dot segment (``.`` or ``..``, percent-encoded or not: a
    client or proxy resolves them to another path than the one given); returned without
    a trailing slash. Raises ``ValueError`` saying what is wrong."""
    if any(not "!" <= c <= "~" for c in value):
        raise ValueError("must be printable ASCII without spaces (percent-encode the others)")
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError as exc:
        raise ValueError(f"is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain a user name or password (set username/password)")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.port == 0:
        raise ValueError("must not use port 0 (leave the port out for the scheme's own)")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    if any(urllib.parse.unquote(s) in (".", "..") for s in parts.path.split("/")):
        raise ValueError("must not have '.' or '..' path segments")
    return value.rstrip("/")


def _check_password(value: SecretStr) -> SecretStr:
    secret = value.get_secret_value()
    if "\x00" in secret:
        raise ValueError("must not contain NUL characters")
    if len(secret.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        raise ValueError(f"must be at most {MAX_PASSWORD_BYTES} bytes")
    return value


def _checked_url(value: object) -> object:
    # Before the pattern, so that a refusal says what is wrong in words.
    return (
        check_target_url(value)
        if isinstance(value, str) and len(value) <= MAX_TARGET_URL_CHARS
        else value
    )


TargetUrl = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TARGET_URL_CHARS, pattern=TARGET_URL_PATTERN),
    BeforeValidator(_checked_url),
]
Password = Annotated[
    SecretStr,
    Field(
        json_schema_extra={
            "writeOnly": True,
            "maxLength": MAX_PASSWORD_BYTES // 4,
            "pattern": _NO_NUL,
        }
    ),
    AfterValidator(_check_password),
]


class _In(BaseModel):
    """A request body: strict types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


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


class PoolStatsOut(BaseModel):
    """One pool: its workers, the jobs they run, its queue, its jobs per status."""

    size: int
    busy: int
    running: list[int]
    queued: int
    delayed: int
    unrecorded: int = Field(
        default=0,
        description="Jobs whose last status the database refused; the pool writes them "
        "again until they land",
    )
    statuses: dict[str, int]


# -- nodes --------------------------------------------------------------------------------------


class NodeLoad(BaseModel):
    """One pool of a node, as the node's last beat recorded it."""

    size: int = Field(description="Workers of the pool")
    busy: int = Field(description="Workers running a job")


class NodeSummary(BaseModel):
    """A live node as ``/api/stats?nodes=true`` shows it."""

    name: str
    age_s: float = Field(description="Seconds since its last beat, by the database's clock")
    dead: bool = Field(description="Its last beat is older than node_timeout")
    pools: dict[str, NodeLoad] = Field(description="Per kind, at its last beat")


class NodeOut(BaseModel):
    """One node (a started service) sharing the database."""

    id: int
    name: str
    state: Literal["live", "gone", "stopped"] = Field(
        description="live: beating (see ``dead``); gone: found dead by another node, "
        "which took its jobs over; stopped: shut down, its jobs handed back"
    )
    dead: bool = Field(description="Live, but its last beat is older than node_timeout")
    self: bool = Field(description="The node that answered this request")
    host: str
    pid: int
    version: str
    started: datetime
    heartbeat: datetime = Field(description="Its last beat")
    age_s: float = Field(description="Seconds since its last beat, by the database's clock")
    ended: datetime | None = Field(description="When it stopped or was found gone")
    ended_by: str = Field(description="The node that found it gone (else empty)")
    pools: dict[str, NodeLoad] = Field(description="Per kind, at its last beat")


class PoolTotals(BaseModel):
    """One kind summed over the live nodes whose beat is not overdue."""

    size: int
    busy: int


class NodesOut(BaseModel):
    """``GET /api/nodes``: the nodes, newest first, and the live ones' totals."""

    node: str = Field(description="The name of the node that answered")
    node_timeout: float = Field(description="Seconds without a beat after which a node is dead")
    nodes: list[NodeOut]
    totals: dict[str, PoolTotals] = Field(
        description="Per kind: workers and busy ones summed over the live nodes not overdue"
    )


class StatsOut(BaseModel):
    """``GET /api/stats``: this node's pools by kind name; with ``?nodes=true`` also
    ``nodes`` (the live nodes) and ``totals`` (per kind, over the live nodes not
    overdue)."""

    model_config = ConfigDict(extra="allow")
    # The pools, by kind name.
    __pydantic_extra__: dict[str, PoolStatsOut] = Field(init=False)

    nodes: list[NodeSummary] | None = Field(
        default=None, description="With ?nodes=true: the live nodes, newest first"
    )
    totals: dict[str, PoolTotals] | None = Field(
        default=None,
        description="With ?nodes=true: per kind, workers and busy ones over the live nodes "
        "not overdue",
    )


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    cause: str | None = Field(default=None, description="Why the service is unavailable")


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


class TargetUpdate(_In):
    """Changes to a target; a field left out keeps its value (the password too)."""

    name: TargetName | None = None
    url: TargetUrl | None = None
    username: Username | None = None
    password: Password | None = None
    insecure: bool | None = None


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


# -- errors -------------------------------------------------------------------------------------


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer: the status, a message a person can act on, and the input
    field at fault when there is one."""

    code: int
    message: str
    field: str | None = None
    errors: list[FieldError] | None = None
