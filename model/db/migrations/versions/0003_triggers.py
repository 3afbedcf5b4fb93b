"""Triggers: schedules (``schedule``), Harbor's immediate triggers of a policy
(``replication_immediate_trigger``), the registry events acted on
(``registry_event``), and a project's scan on push (``project.auto_scan``).

Adding what is missing only (a database an embedded service created with this
version's tables, then adopted, has them already).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    # MySQL's DATETIME keeps whole seconds unless given microseconds.
    kind = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    return sa.Column(name, kind, nullable=nullable)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "auto_scan" not in {c["name"] for c in inspector.get_columns("project")}:
        op.add_column(
            "project",
            sa.Column("auto_scan", sa.Boolean(), nullable=False, server_default=sa.false()),
        )
    if not inspector.has_table("replication_immediate_trigger"):
        op.create_table(
            "replication_immediate_trigger",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("policy_id", sa.Integer(), nullable=False),
            sa.Column("namespace", sa.String(length=256), nullable=False),
            sa.Column("on_push", sa.Boolean(), nullable=False),
            sa.Column("on_deletion", sa.Boolean(), nullable=False),
            _time("creation_time"),
            _time("update_time"),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index(
            "ix_replication_immediate_trigger_policy_id",
            "replication_immediate_trigger",
            ["policy_id"],
        )
    if not inspector.has_table("schedule"):
        op.create_table(
            "schedule",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("kind", sa.String(length=32), nullable=False),
            sa.Column("policy_id", sa.Integer(), nullable=True),
            sa.Column("pattern", sa.String(length=256), nullable=False),
            sa.Column("cron", sa.String(length=256), nullable=False),
            sa.Column("timezone", sa.String(length=64), nullable=False),
            sa.Column("enabled", sa.Boolean(), nullable=False),
            _time("next_fire_at", nullable=True),
            _time("last_fired_at", nullable=True),
            _time("creation_time"),
            _time("update_time"),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_schedule_policy_id", "schedule", ["policy_id"])
        op.create_index("ix_schedule_next_fire_at", "schedule", ["next_fire_at"])
    if not inspector.has_table("registry_event"):
        op.create_table(
            "registry_event",
            sa.Column("id", sa.String(length=128), nullable=False),
            _time("received"),
            sa.PrimaryKeyConstraint("id"),
        )


def downgrade() -> None:
    op.drop_table("registry_event")
    op.drop_index("ix_schedule_next_fire_at", table_name="schedule")
    op.drop_index("ix_schedule_policy_id", table_name="schedule")
    op.drop_table("schedule")
    op.drop_index(
        "ix_replication_immediate_trigger_policy_id", table_name="replication_immediate_trigger"
    )
    op.drop_table("replication_immediate_trigger")
    with op.batch_alter_table("project") as batch:
        batch.drop_column("auto_scan")
