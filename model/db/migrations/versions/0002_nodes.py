"""Several nodes on one database: the ``node`` table, and on every job table the node
that claimed the job (``node_id``), a stop asked for on another node
(``stop_requested``), and an index of running jobs by node.

Adding what is missing only: a database whose tables ``JobService.start()`` created
with this version's tables, then adopted at revision 0001, has them already.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_JOB_TABLES = ("replication_job", "img_scan_job", "job")
_RUNNING = sa.text("status = 'running'")


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    # MySQL's DATETIME keeps whole seconds unless given microseconds.
    kind = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    return sa.Column(name, kind, nullable=nullable)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("node"):
        op.create_table(
            "node",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(length=255), nullable=False),
            sa.Column("host", sa.String(length=255), nullable=False),
            sa.Column("pid", sa.Integer(), nullable=False),
            sa.Column("version", sa.String(length=64), nullable=False),
            sa.Column("state", sa.String(length=16), nullable=False),
            _time("started"),
            _time("heartbeat"),
            sa.Column("pools", sa.Text(), nullable=False),
            _time("ended", nullable=True),
            sa.Column("ended_by", sa.String(length=255), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_node_state", "node", ["state"])
    for table in _JOB_TABLES:
        columns = {column["name"] for column in inspector.get_columns(table)}
        if "node_id" not in columns:
            op.add_column(table, sa.Column("node_id", sa.Integer(), nullable=True))
        if "stop_requested" not in columns:
            op.add_column(
                table,
                sa.Column(
                    "stop_requested", sa.Boolean(), nullable=False, server_default=sa.false()
                ),
            )
        indexes = {index["name"] for index in inspector.get_indexes(table)}
        if f"{table}_running" not in indexes:
            op.create_index(
                f"{table}_running",
                table,
                ["node_id"],
                sqlite_where=_RUNNING,
                postgresql_where=_RUNNING,
            )


def downgrade() -> None:
    for table in _JOB_TABLES:
        op.drop_index(f"{table}_running", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("stop_requested")
            batch.drop_column("node_id")
    op.drop_index("ix_node_state", table_name="node")
    op.drop_table("node")
