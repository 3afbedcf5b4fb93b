"""The initial schema: every table of model/db/tables.py, with the partial claim indexes.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: Text of any length (MySQL's VARCHAR needs a length: TEXT there).
_ANY_TEXT = sa.String().with_variant(mysql.TEXT(), "mysql", "mariadb")
#: The jobs a pool may claim: the claim indexes cover only these rows.
_CLAIMABLE = sa.text("status IN ('pending', 'retrying')")


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    # MySQL's DATETIME keeps whole seconds unless given microseconds.
    kind = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    return sa.Column(name, kind, nullable=nullable)


def _job_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _time("next_attempt_at", nullable=True),
        _time("creation_time"),
        _time("update_time"),
    ]


def _claim_index(name: str, table: str, columns: list[str]) -> None:
    _index(name, table, columns, sqlite_where=_CLAIMABLE, postgresql_where=_CLAIMABLE)


#: The tables this revision created (a table already there, as in an existing Harbor
#: 1.4 database, is left as it is; revision 0004 adds this service's columns to it).
_created: set[str] = set()


def _create(name: str, *parts: sa.schema.SchemaItem) -> None:
    if sa.inspect(op.get_bind()).has_table(name):
        return
    op.create_table(name, *parts)
    _created.add(name)


def _index(name: str, table: str, columns: list[str], **kw: Any) -> None:
    if table in _created:
        op.create_index(name, table, columns, **kw)


def upgrade() -> None:
    _created.clear()
    _catalog_tables()
    _job_tables()
    _scan_result_tables()


def _catalog_tables() -> None:
    _create(
        "project",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    _create(
        "replication_target",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("password", sa.String(length=4096), nullable=False),
        sa.Column("insecure", sa.Boolean(), nullable=False),
        _time("creation_time"),
        _time("update_time"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    _create(
        "replication_policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("description", _ANY_TEXT, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("replicate_deletion", sa.Boolean(), nullable=False),
        _time("creation_time"),
        _time("update_time"),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _index("ix_replication_policy_project_id", "replication_policy", ["project_id"])
    _index("ix_replication_policy_target_id", "replication_policy", ["target_id"])


def _job_tables() -> None:
    _create(
        "replication_job",
        *_job_columns(),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repository", sa.String(length=256), nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _index("ix_replication_job_policy_id", "replication_job", ["policy_id"])
    _claim_index("replication_job_claim", "replication_job", ["id"])

    _create(
        "img_scan_job",
        *_job_columns(),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repository", sa.String(length=256), nullable=False),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.Column("digest", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _claim_index("img_scan_job_claim", "img_scan_job", ["id"])
    _create(
        "job",
        *_job_columns(),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _claim_index("job_claim", "job", ["kind", "id"])


def _scan_result_tables() -> None:
    _create(
        "img_scan_overview",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_digest", sa.String(length=128), nullable=False),
        sa.Column("scan_job_id", sa.Integer(), nullable=False),
        sa.Column("severity", sa.Integer(), nullable=False),
        sa.Column("components_overview", _ANY_TEXT, nullable=False),
        sa.Column("details_key", _ANY_TEXT, nullable=False),
        _time("creation_time"),
        _time("update_time"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("image_digest"),
    )
    _create(
        "img_scan_finding",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_digest", sa.String(length=128), nullable=False),
        sa.Column("scan_job_id", sa.Integer(), nullable=False),
        sa.Column("vulnerability_id", sa.String(length=256), nullable=False),
        sa.Column("package", sa.String(length=256), nullable=False),
        sa.Column("version", sa.String(length=256), nullable=False),
        sa.Column("fixed_version", sa.String(length=256), nullable=False),
        sa.Column("severity", sa.Integer(), nullable=False),
        sa.Column("description", _ANY_TEXT, nullable=False),
        sa.Column("link", _ANY_TEXT, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _index("ix_img_scan_finding_image_digest", "img_scan_finding", ["image_digest"])


def downgrade() -> None:
    for table in (
        "job",
        "img_scan_finding",
        "img_scan_overview",
        "img_scan_job",
        "replication_job",
        "replication_policy",
        "replication_target",
        "project",
    ):
        op.drop_table(table)
