"""The SQL of the ``node`` table and of the statements that span nodes (take-overs,
stops across nodes, notifications), built once per dialect (see :mod:`model.db.nodes`).

Times come from the database's clock on PostgreSQL and MySQL, so that nodes on
machines whose clocks differ agree on who is late; SQLite (one machine) takes them as
parameters (``:now``, ``:cutoff``, ``:forget``, see :func:`time_params`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from model.db.tables import JOB_TABLES, utcnow
from model.status import Status

__all__ = [
    "CHANNEL",
    "FORGET_AFTER",
    "NodeStatements",
    "TableStatements",
    "node_channel",
    "node_statements",
]

#: The PostgreSQL notification channel of every node of one database.
CHANNEL = "jobservice"
#: Rows of nodes that ended longer ago than this are deleted at a take-over.
FORGET_AFTER = timedelta(days=7)

_RUNNING = f"'{Status.RUNNING.value}'"


def node_channel(node: int) -> str:
    """The notification channel of node ``node`` alone (PostgreSQL)."""
    return f"{CHANNEL}_{int(node)}"


_PENDING = f"'{Status.PENDING.value}'"
#: A running job of no live node (or of no node).
_ORPHANED = (
    f"status = {_RUNNING} AND (node_id IS NULL OR node_id NOT IN "
    "(SELECT id FROM node WHERE state = :live))"
)


@dataclass(frozen=True)
class TableStatements:
    """What spans nodes in one job table."""

    #: Whether the table holds several kinds (a ``kind`` column): the reads below then
    #: return it after the id.
    scoped: bool
    #: The running jobs of no live node (or of no node), with their node (and kind);
    #: locked as read on MySQL, which has no ``UPDATE … RETURNING``.
    orphaned: str
    #: Hands those back as pending, claimed by ``:id``; on MySQL only the ``:ids`` read.
    hand_back: str
    #: Records a stop request on running job ``:id``; returns its node (not on MySQL).
    request_stop: str
    #: MySQL: locks and reads running job ``:id``'s node before :attr:`request_stop`.
    request_stop_lock: str
    #: The running jobs of node ``:id`` that another node was asked to stop.
    stop_requests: str


@dataclass(frozen=True)
class NodeStatements:
    """The node table's statements in one dialect."""

    dialect: str
    #: The database's time now (UTC), an expression; :attr:`clock` reads it.
    now: str
    clock: str
    beat: str
    end: str
    others_live: str
    #: The ids of the live nodes whose beat is younger than ``:timeout``, lowest first.
    live_ids: str
    #: Marks ``gone`` the live nodes (other than ``:id``) late or in ``:dead``.
    mark_gone: str
    #: Whether a take-over has anything to do but for nodes known dead: a live node
    #: (other than ``:id``) late, a node to forget, a running job of no live node.
    anything_to_take: str
    #: The nodes that are not live: (id, name).
    ended_names: str
    forget: str
    notify: str
    tables: dict[str, TableStatements]

    def time_params(self, **values: Any) -> dict[str, Any]:
        """``values`` with the times the statements take as parameters: on SQLite all
        of them, on MySQL ``:timeout`` (seconds) in microseconds."""
        if self.dialect == "sqlite":
            now = utcnow().replace(tzinfo=None)
            values["now"] = _text(now)
            values["cutoff"] = _text(now - timedelta(seconds=float(values.get("timeout", 0))))
            values["forget"] = _text(now - FORGET_AFTER)
        elif self.dialect == "mysql":
            values["timeout_us"] = round(float(values.get("timeout", 0)) * 1_000_000)
        return values


@cache
def node_statements(dialect: str) -> NodeStatements:
    """The statements of ``dialect`` ("sqlite", "postgresql" or "mysql")."""
    if dialect == "sqlite":
        now, cutoff, forget = ":now", ":cutoff", ":forget"
    elif dialect == "mysql":
        now = "UTC_TIMESTAMP(6)"
        cutoff = f"({now} - INTERVAL :timeout_us MICROSECOND)"
        forget = f"({now} - INTERVAL {FORGET_AFTER.days} DAY)"
    else:
        now = "(now() AT TIME ZONE 'UTC')"
        cutoff = f"({now} - make_interval(secs => :timeout))"
        forget = f"({now} - make_interval(days => {FORGET_AFTER.days}))"
    return NodeStatements(
        dialect=dialect,
        now=now,
        clock=f"SELECT {now}",
        beat=f"UPDATE node SET heartbeat = {now}, pools = :pools WHERE id = :id AND state = :live",
        end=f"UPDATE node SET state = :stopped, ended = {now} WHERE id = :id AND state = :live",
        others_live=(
            f"SELECT count(*) FROM node WHERE state = :live AND id <> :id AND heartbeat >= {cutoff}"
        ),
        live_ids=(f"SELECT id FROM node WHERE state = :live AND heartbeat >= {cutoff} ORDER BY id"),
        mark_gone=(
            f"UPDATE node SET state = :gone, ended = {now}, ended_by = :name "
            f"WHERE state = :live AND id <> :id AND (heartbeat < {cutoff} OR id IN :dead)"
        ),
        anything_to_take="SELECT "
        + " OR ".join(
            [
                "EXISTS (SELECT 1 FROM node WHERE state = :live AND id <> :id "
                f"AND heartbeat < {cutoff})",
                f"EXISTS (SELECT 1 FROM node WHERE state <> :live AND ended < {forget})",
                *(f"EXISTS (SELECT 1 FROM {table} WHERE {_ORPHANED})" for table in JOB_TABLES),
            ]
        ),
        ended_names="SELECT id, name FROM node WHERE state <> :live",
        forget=f"DELETE FROM node WHERE state <> :live AND ended < {forget}",
        notify="SELECT pg_notify(:channel, :payload)",
        tables={table: _table_statements(table, dialect, now) for table in JOB_TABLES},
    )


def _table_statements(table: str, dialect: str, now: str) -> TableStatements:
    scoped = "kind" in JOB_TABLES[table].__table__.c  # type: ignore[attr-defined]
    kind = ", kind" if scoped else ""
    orphaned = _ORPHANED
    mysql = dialect == "mysql"
    hand_back = (
        f"UPDATE {table} SET status = {_PENDING}, update_time = {now}, node_id = :id "
        f"WHERE {orphaned}"
    )
    request_stop = (
        f"UPDATE {table} SET stop_requested = :yes WHERE id = :id AND status = {_RUNNING}"
    )
    return TableStatements(
        scoped=scoped,
        orphaned=f"SELECT id, node_id{kind} FROM {table} WHERE {orphaned}"
        + (" FOR UPDATE" if mysql else ""),
        hand_back=f"{hand_back} AND id IN :ids" if mysql else f"{hand_back} RETURNING id",
        request_stop=request_stop if mysql else f"{request_stop} RETURNING node_id",
        request_stop_lock=(
            f"SELECT node_id FROM {table} WHERE id = :id AND status = {_RUNNING} FOR UPDATE"
        ),
        stop_requests=(
            f"SELECT id{kind} FROM {table} WHERE status = {_RUNNING} "
            "AND node_id = :id AND stop_requested = :yes"
        ),
    )


def _text(value: datetime) -> str:
    """A naive UTC time as SQLite holds SQLAlchemy's ``DateTime``."""
    return value.isoformat(" ", "microseconds")
