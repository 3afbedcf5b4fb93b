"""Harbor 1.4's shapes: the tables Harbor and this service share get Harbor's column
names, types, nullability and defaults, so Harbor's own inserts work on them; the
columns only this service uses get server defaults for the same reason.

- ``project``: the key column is ``project_id``; ``owner_id`` (1, Harbor's admin, for
  existing rows), ``deleted`` and the two times are added.
- ``replication_target``: ``target_type`` is added; ``url`` holds 64 characters and
  ``password`` 128 (an existing longer value stops the migration, naming the rows).
- ``replication_policy``: ``cron_str``, ``filters`` and ``start_time`` are added.
- ``replication_job``: ``tags`` may be NULL (every tag), Harbor's indexes ``policy`` and
  ``poid_uptime``; ``img_scan_job.digest`` may be NULL; ``img_scan_overview`` keeps
  Harbor's lengths.

It only adds or changes what differs: on a database whose tables already have these
shapes (an existing Harbor 1.4 database, or one a ``JobService.start()`` of this version
created) it adds this service's own columns and indexes and changes nothing else.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_JOB_TABLES = ("replication_job", "img_scan_job", "job")
_CLAIMABLE = sa.text("status IN ('pending', 'retrying')")
_RUNNING = sa.text("status = 'running'")
_TIME = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
_TAGS = sa.String(16384).with_variant(mysql.TEXT(), "mysql", "mariadb")
_FALSE = sa.false()


class _Table:
    """One table as it is now: its columns and indexes, read once."""

    def __init__(self, inspector: Any, name: str) -> None:
        self.name = name
        self.columns = {c["name"]: c for c in inspector.get_columns(name)}
        self.indexes = {i["name"] for i in inspector.get_indexes(name)}

    def add(self, column: sa.Column[Any]) -> None:
        if column.name in self.columns:
            return
        op.add_column(self.name, column)
        self.columns[column.name] = {
            "name": column.name,
            "type": column.type,
            "nullable": column.nullable,
            "default": column.server_default,
        }

    def add_time(self, name: str) -> None:
        """A NOT NULL time column; the rows there are get the migration's time."""
        if name in self.columns:
            return
        op.add_column(self.name, sa.Column(name, _TIME, nullable=True))
        op.execute(sa.text(f"UPDATE {self.name} SET {name} = CURRENT_TIMESTAMP"))
        with op.batch_alter_table(self.name) as batch:
            batch.alter_column(name, existing_type=_TIME, nullable=False)

    def length(self, name: str) -> int | None:
        return getattr(self.columns[name]["type"], "length", None)

    def reshape(self, name: str, kind: sa.types.TypeEngine[Any], **changes: Any) -> None:
        """Gives column ``name`` type ``kind`` (when its length differs) and ``changes``
        (nullable, server_default) where they differ."""
        column = self.columns[name]
        wanted: dict[str, Any] = {}
        target_length = getattr(kind, "length", None)
        if self.length(name) != target_length or not _same_text(column["type"], kind):
            wanted["type_"] = kind
        if "nullable" in changes and bool(column["nullable"]) != changes["nullable"]:
            wanted["nullable"] = changes["nullable"]
        if "server_default" in changes and column.get("default") is None:
            wanted["server_default"] = changes["server_default"]
        if wanted:
            with op.batch_alter_table(self.name) as batch:
                batch.alter_column(
                    name,
                    existing_type=column["type"],
                    existing_nullable=column["nullable"],
                    **wanted,
                )

    def index(self, name: str, *columns: str, where: Any = None) -> None:
        if name in self.indexes:
            return
        partial = {} if where is None else {"sqlite_where": where, "postgresql_where": where}
        op.create_index(name, self.name, list(columns), **partial)


def _same_text(have: sa.types.TypeEngine[Any], want: sa.types.TypeEngine[Any]) -> bool:
    """Both TEXT, or both VARCHAR (a length aside)."""
    return isinstance(have, sa.Text) == isinstance(want, sa.Text)


#: Harbor's lengths that are shorter than this service's were: checked before any change.
_HARBOR_LENGTHS = (
    ("replication_target", "name", 64),
    ("replication_target", "url", 64),
    ("replication_target", "password", 128),
    ("img_scan_overview", "components_overview", 2048),
    ("img_scan_overview", "details_key", 128),
)


def _refuse_what_does_not_fit() -> None:
    """Stops the migration, before it changes anything, when a value is longer than
    Harbor's column holds (shortening it would lose data)."""
    bind = op.get_bind()
    length = "length" if bind.dialect.name == "sqlite" else "char_length"
    for table, column, most in _HARBOR_LENGTHS:
        rows = bind.execute(
            sa.text(f"SELECT id FROM {table} WHERE {length}({column}) > :n ORDER BY id"),
            {"n": most},
        ).scalars()
        ids = [str(i) for i in rows]
        if ids:
            raise RuntimeError(
                f"{table}.{column} holds at most {most} characters in Harbor 1.4's schema; "
                f"rows {', '.join(ids)} hold more: shorten them, then upgrade"
            )


def upgrade() -> None:
    _refuse_what_does_not_fit()
    inspector = sa.inspect(op.get_bind())
    _project(_Table(inspector, "project"))
    _target(_Table(inspector, "replication_target"))
    _policy(_Table(inspector, "replication_policy"))
    _trigger(_Table(inspector, "replication_immediate_trigger"))
    for name in _JOB_TABLES:
        _job_columns(_Table(inspector, name))
    _replication_job(_Table(inspector, "replication_job"))
    _scan_job(_Table(inspector, "img_scan_job"))
    _overview(_Table(inspector, "img_scan_overview"))


def _project(table: _Table) -> None:
    if "id" in table.columns and "project_id" not in table.columns:
        with op.batch_alter_table("project") as batch:
            batch.alter_column(
                "id",
                new_column_name="project_id",
                existing_type=sa.Integer(),
                existing_nullable=False,
                autoincrement=True,
            )
    table.add(sa.Column("owner_id", sa.Integer(), nullable=False, server_default="1"))
    table.add_time("creation_time")
    table.add_time("update_time")
    table.add(sa.Column("deleted", sa.Boolean(), nullable=False, server_default=_FALSE))
    table.add(sa.Column("public", sa.Boolean(), nullable=False, server_default=_FALSE))
    table.reshape("public", sa.Boolean(), server_default=_FALSE)


def _target(table: _Table) -> None:
    table.add(sa.Column("target_type", sa.SmallInteger(), nullable=False, server_default="0"))
    table.reshape("name", sa.String(64), nullable=True)
    table.reshape("url", sa.String(64), nullable=True)
    table.reshape("username", sa.String(255), nullable=True)
    table.reshape("password", sa.String(128), nullable=True)
    table.reshape("insecure", sa.Boolean(), server_default=_FALSE)


def _policy(table: _Table) -> None:
    table.reshape("name", sa.String(256), nullable=True)
    table.reshape("description", sa.Text(), nullable=True)
    table.reshape("enabled", sa.Boolean(), server_default=sa.true())
    table.reshape("deleted", sa.Boolean(), server_default=_FALSE)
    table.reshape("replicate_deletion", sa.Boolean(), server_default=_FALSE)
    table.add(sa.Column("cron_str", sa.String(256), nullable=True))
    table.add(sa.Column("filters", sa.String(1024), nullable=True))
    table.add(sa.Column("start_time", _TIME, nullable=True))


def _trigger(table: _Table) -> None:
    table.reshape("on_push", sa.Boolean(), server_default=_FALSE)
    table.reshape("on_deletion", sa.Boolean(), server_default=_FALSE)


def _job_columns(table: _Table) -> None:
    """This service's columns of a job table (Harbor's job tables lack them)."""
    table.add(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    table.reshape("attempts", sa.Integer(), server_default="0")
    table.add(sa.Column("next_attempt_at", _TIME, nullable=True))
    table.add(sa.Column("node_id", sa.Integer(), nullable=True))
    table.add(sa.Column("stop_requested", sa.Boolean(), nullable=False, server_default=_FALSE))
    key = ["kind", "id"] if table.name == "job" else ["id"]
    table.index(f"{table.name}_claim", *key, where=_CLAIMABLE)
    table.index(f"{table.name}_running", "node_id", where=_RUNNING)


def _replication_job(table: _Table) -> None:
    table.reshape("tags", _TAGS, nullable=True)
    if "ix_replication_job_policy_id" in table.indexes:
        op.drop_index("ix_replication_job_policy_id", "replication_job")
    table.index("policy", "policy_id")
    table.index("poid_uptime", "policy_id", "update_time")


def _scan_job(table: _Table) -> None:
    table.reshape("digest", sa.String(128), nullable=True)


def _overview(table: _Table) -> None:
    table.reshape("severity", sa.Integer(), server_default="0")
    table.reshape("components_overview", sa.String(2048), nullable=True)
    table.reshape("details_key", sa.String(128), nullable=True)


def downgrade() -> None:
    raise NotImplementedError("Harbor 1.4's shapes are kept: restore a backup to go back")
