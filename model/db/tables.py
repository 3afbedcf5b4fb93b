"""Database tables, named and shaped as Harbor 1.4's so an existing database maps onto them.

Columns the original did not have are marked *added* with the reason.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from model.operation import Operation
from model.status import CLAIMABLE, Status

__all__ = [
    "JOB_TABLES",
    "TIME",
    "UNBOUNDED_TEXT",
    "GenericJob",
    "ImgScanJob",
    "ImgScanOverview",
    "Node",
    "NodeState",
    "Project",
    "RegistryEvent",
    "ReplicationImmediateTrigger",
    "ReplicationJob",
    "ReplicationPolicy",
    "ReplicationTarget",
    "ScanFinding",
    "Schedule",
    "utcnow",
]


class UtcTime(TypeDecorator[datetime]):
    """A time column, read and written as timezone-aware UTC: ``TIMESTAMP WITH TIME ZONE``
    on PostgreSQL, SQLite's text; on MySQL ``DATETIME(6)`` holding UTC (its plain
    ``DATETIME`` keeps whole seconds, and due times would compare and order wrongly).
    A naive value (a row Harbor wrote) is UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name in ("mysql", "mariadb") else utc

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


TIME = UtcTime()
#: Text of any length: ``VARCHAR`` without a length on SQLite and PostgreSQL, ``TEXT``
#: on MySQL, whose ``VARCHAR`` needs a length.
UNBOUNDED_TEXT = sa.String().with_variant(mysql.TEXT(), "mysql", "mariadb")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class CommaList(TypeDecorator[list[str]]):
    """A list of strings stored as the original's comma-separated text column."""

    impl = sa.String(16384).with_variant(mysql.TEXT(), "mysql", "mariadb")
    cache_ok = True

    def process_bind_param(self, value: list[str] | None, dialect: sa.Dialect) -> str:
        return ",".join(value or [])

    def process_result_value(self, value: str | None, dialect: sa.Dialect) -> list[str]:
        return [t for t in (value or "").split(",") if t]


class JSONText(TypeDecorator[Any]):
    """A JSON document stored as text, portable between SQLite and PostgreSQL."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> str:
        return json.dumps(value if value is not None else {}, sort_keys=True)

    def process_result_value(self, value: str | None, dialect: sa.Dialect) -> Any:
        return json.loads(value) if value else {}


def _claim_index(name: str, *columns: str) -> sa.Index:
    """A partial index over the jobs a pool may claim, so a claim stays O(log n) however
    many finished jobs the table holds."""
    listed = ", ".join(f"'{status}'" for status in CLAIMABLE)
    claimable = sa.text(f"status IN ({listed})")
    return sa.Index(name, *columns, sqlite_where=claimable, postgresql_where=claimable)


def _running_index(name: str) -> sa.Index:
    """A partial index over running jobs by node, so a take-over finds a dead node's jobs
    without reading the finished ones."""
    running = sa.text(f"status = '{Status.RUNNING.value}'")
    return sa.Index(name, "node_id", sqlite_where=running, postgresql_where=running)


def _created() -> Any:
    return Field(default_factory=utcnow, nullable=False, sa_type=TIME)


class Project(SQLModel, table=True):
    """A project of the registry; repositories are named ``<project>/<name>``.

    Harbor 1.4's ``project`` table: its key column is ``project_id`` (``id`` here),
    ``owner_id`` names a Harbor user (1, Harbor's admin, for the projects made here).
    Harbor keeps a project's public flag in ``project_metadata``; ``public`` and
    ``auto_scan`` here are this service's own columns."""

    __tablename__ = "project"

    id: int | None = Field(
        default=None, sa_column=sa.Column("project_id", sa.Integer, primary_key=True)
    )
    owner_id: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    name: str = Field(unique=True, max_length=255)
    creation_time: datetime = _created()
    update_time: datetime = _created()
    deleted: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    #: *added*: the project is public (Harbor keeps it in ``project_metadata``).
    public: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    #: *added*: scan every image pushed to the project (Harbor keeps it in
    #: ``project_metadata`` as ``automatically_scan_images_on_push``).
    auto_scan: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})


class ReplicationTarget(SQLModel, table=True):
    """A registry replication copies to. ``password`` holds the encrypted secret
    (``<enc-v2>``, or Harbor's ``<enc-v1>``); Harbor's column holds 128 characters."""

    __tablename__ = "replication_target"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64, nullable=True)
    url: str = Field(max_length=64, nullable=True)
    username: str = Field(default="", max_length=255, nullable=True)
    password: str = Field(default="", max_length=128, nullable=True)
    #: Harbor's kind of target: 0 a Harbor instance, 1 a plain registry.
    target_type: int = Field(
        default=0, sa_type=sa.SmallInteger, sa_column_kwargs={"server_default": "0"}
    )
    insecure: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    creation_time: datetime = _created()
    update_time: datetime = _created()


class ReplicationPolicy(SQLModel, table=True):
    """Which project replicates to which target. ``cron_str``, ``filters`` and
    ``start_time`` are Harbor's own (its UI schedules policies through them)."""

    __tablename__ = "replication_policy"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=256, nullable=True)
    project_id: int = Field(index=True)
    target_id: int = Field(index=True)
    enabled: bool = Field(default=True, sa_column_kwargs={"server_default": sa.true()})
    description: str = Field(default="", sa_type=sa.Text, nullable=True)
    deleted: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    cron_str: str | None = Field(default=None, max_length=256)
    filters: str | None = Field(default=None, max_length=1024)
    replicate_deletion: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    start_time: datetime | None = Field(default=None, sa_type=TIME)
    creation_time: datetime = _created()
    update_time: datetime = _created()


class ReplicationImmediateTrigger(SQLModel, table=True):
    """Harbor's immediate triggers of a policy: replicate a push (``on_push``) and a
    deletion (``on_deletion``) in the policy's project as the registry reports them."""

    __tablename__ = "replication_immediate_trigger"

    id: int | None = Field(default=None, primary_key=True)
    policy_id: int = Field(index=True)
    namespace: str = Field(max_length=256)
    on_push: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    on_deletion: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    creation_time: datetime = _created()
    update_time: datetime = _created()


class Schedule(SQLModel, table=True):
    """*added*: a job that fires on a schedule: a replication policy's run (``policy_id``)
    or a scan of every image whose repository matches ``pattern`` (``library/*``).

    ``cron`` is a cron expression (or Harbor's ``cron_str`` JSON form) read in
    ``timezone``; ``next_fire_at`` (UTC) is the next time it fires, kept here so that a
    restart neither misses nor repeats a run, and moved forward by the node that fires
    it with one guarded UPDATE (two nodes never fire one slot)."""

    __tablename__ = "schedule"

    id: int | None = Field(default=None, primary_key=True)
    #: ``replication`` (with ``policy_id``) or ``scan`` (with ``pattern``).
    kind: str = Field(max_length=32)
    policy_id: int | None = Field(default=None, index=True)
    pattern: str = Field(default="", max_length=256)
    cron: str = Field(max_length=256)
    timezone: str = Field(default="UTC", max_length=64)
    enabled: bool = True
    next_fire_at: datetime | None = Field(default=None, index=True, sa_type=TIME)
    last_fired_at: datetime | None = Field(default=None, sa_type=TIME)
    creation_time: datetime = _created()
    update_time: datetime = _created()


class RegistryEvent(SQLModel, table=True):
    """*added*: the id of each registry notification event acted on, so that an event
    delivered twice (the registry retries) queues its jobs once."""

    __tablename__ = "registry_event"

    id: str = Field(primary_key=True, max_length=128)
    received: datetime = _created()


class _JobColumns(SQLModel):
    status: str = Field(default="pending", max_length=64)
    #: *added*: how many times the job entered ``retrying``; bounds the retries
    #: (``max_retries``) and sizes the exponential backoff. The original retried forever.
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    #: *added*: when a ``retrying`` job is due again. Kept in the row so the due time
    #: survives a restart and no thread or timer waits per job.
    next_attempt_at: datetime | None = Field(default=None, sa_type=TIME)
    creation_time: datetime = _created()
    update_time: datetime = _created()
    #: *added*: the node (:class:`Node`) that claimed the job last. Only that node may
    #: change the status of the job while it is ``running``.
    node_id: int | None = None
    #: *added*: a stop was asked for on another node than the one running the job; the
    #: running node stops it (told by a notification, or at its next poll).
    stop_requested: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})


class ReplicationJob(_JobColumns, table=True):
    """One replication of one repository: ``transfer`` its tags, or ``delete`` them."""

    __tablename__ = "replication_job"
    __table_args__ = (
        sa.Index("policy", "policy_id"),
        sa.Index("poid_uptime", "policy_id", "update_time"),
        _claim_index("replication_job_claim", "id"),
        _running_index("replication_job_running"),
    )

    id: int | None = Field(default=None, primary_key=True)
    repository: str = Field(max_length=256)
    policy_id: int
    operation: str = Field(default=Operation.TRANSFER, max_length=64)
    #: Comma-separated; NULL (Harbor's zero value) is every tag.
    tags: list[str] = Field(default_factory=list, sa_type=CommaList, nullable=True)


class ImgScanJob(_JobColumns, table=True):
    """One scan of one image."""

    __tablename__ = "img_scan_job"
    __table_args__ = (
        _claim_index("img_scan_job_claim", "id"),
        _running_index("img_scan_job_running"),
    )

    id: int | None = Field(default=None, primary_key=True)
    repository: str = Field(max_length=256)
    tag: str = Field(max_length=128)
    digest: str = Field(default="", max_length=128, nullable=True)


class ImgScanOverview(SQLModel, table=True):
    """The latest scan result of an image, one row per digest."""

    __tablename__ = "img_scan_overview"

    id: int | None = Field(default=None, primary_key=True)
    image_digest: str = Field(unique=True, max_length=128)
    scan_job_id: int
    severity: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    components_overview: str = Field(default="", max_length=2048, nullable=True)
    details_key: str = Field(default="", max_length=128, nullable=True)
    creation_time: datetime = _created()
    update_time: datetime = _created()


class ScanFinding(SQLModel, table=True):
    """*added*: one vulnerability found in one package of an image, so it can be listed."""

    __tablename__ = "img_scan_finding"

    id: int | None = Field(default=None, primary_key=True)
    image_digest: str = Field(index=True, max_length=128)
    scan_job_id: int
    vulnerability_id: str = Field(max_length=256)
    package: str = Field(max_length=256)
    version: str = Field(max_length=256)
    fixed_version: str = Field(default="", max_length=256)
    severity: int = 2
    description: str = Field(default="", sa_type=UNBOUNDED_TEXT)
    link: str = Field(default="", sa_type=UNBOUNDED_TEXT)


class GenericJob(_JobColumns, table=True):
    """A job of a kind registered by an embedding application."""

    __tablename__ = "job"
    __table_args__ = (_claim_index("job_claim", "kind", "id"), _running_index("job_running"))

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=64)
    params: dict[str, Any] = Field(default_factory=dict, sa_type=JSONText)


class NodeState:
    """The states of a :class:`Node` row."""

    #: Beating; owns the jobs it runs.
    LIVE = "live"
    #: Its heartbeat stopped (or its process is gone): another node took its jobs over.
    GONE = "gone"
    #: Shut down, its jobs handed back.
    STOPPED = "stopped"


class Node(SQLModel, table=True):
    """*added*: one started service (a node); several nodes on one database are one job
    service. A node beats (``heartbeat``) every ``heartbeat_interval``; one whose beat
    is older than ``node_timeout`` is dead, and a live node takes its jobs over."""

    __tablename__ = "node"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=255)
    host: str = Field(max_length=255)
    pid: int
    version: str = Field(max_length=64)
    state: str = Field(default=NodeState.LIVE, max_length=16, index=True)
    started: datetime = _created()
    heartbeat: datetime = _created()
    #: Per kind: ``{"size": n, "busy": n}`` at the last beat.
    pools: dict[str, Any] = Field(default_factory=dict, sa_type=JSONText)
    #: When the node stopped or was found gone, and (gone) which node found it.
    ended: datetime | None = Field(default=None, sa_type=TIME)
    ended_by: str = Field(default="", max_length=255)


#: The tables that hold jobs, by table name.
JOB_TABLES: dict[str, type[_JobColumns]] = {
    "replication_job": ReplicationJob,
    "img_scan_job": ImgScanJob,
    "job": GenericJob,
}
