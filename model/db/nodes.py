"""The ``node`` table, and the statements that span nodes sharing one database.

Every started service is a node: it registers a row, beats (``heartbeat``) on a timer,
and records itself on every job it claims (``node_id``). A node whose beat is older
than ``node_timeout``, or whose process is gone, is dead: a live node marks it ``gone``
and hands its ``running`` jobs back as ``pending`` (:meth:`Nodes.take_over`), in one
transaction whose guarded UPDATEs let two nodes doing it at once take each job once.

Times of beats and deadlines are the database's clock on PostgreSQL and MySQL (nodes
on several machines need not agree on the time), this machine's on SQLite (one
machine).

On PostgreSQL, nodes tell each other of new work and of stops with ``NOTIFY`` on
:data:`CHANNEL`; payloads are ``wake <kind> <node>`` and ``stop <kind> <job id>``.
MySQL has no notifications: its nodes, as SQLite's, learn of both at their polls.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from model.db._writer import Writer
from model.db.tables import JOB_TABLES, Node, NodeState, utcnow
from model.stamps import aware
from model.status import Status

__all__ = ["CHANNEL", "Nodes", "TakenOver"]

#: The PostgreSQL notification channel of every node of one database.
CHANNEL = "jobservice"
#: Rows of nodes that ended longer ago than this are deleted at a take-over.
_FORGET_AFTER = timedelta(days=7)


@dataclass(frozen=True)
class TakenOver:
    """A ``running`` job of a dead node, handed back as ``pending`` by a live one."""

    table: str
    job_id: int
    #: The ``kind`` column (the shared table), else None.
    kind: str | None
    #: The name of the node that ran it (None when no node had claimed it).
    dead_node: str | None


class Nodes:
    """The node table of one store (see :attr:`model.db.Store.nodes`)."""

    def __init__(self, writer: Writer, dialect: str) -> None:
        self._writer = writer
        self._dialect = dialect
        self._sqlite = dialect == "sqlite"
        # Now, ``:timeout`` seconds ago, and when ended nodes are forgotten, in the
        # statements: parameters on SQLite, the server's clock elsewhere.
        if dialect == "sqlite":
            self._now, self._cutoff, self._forget = ":now", ":cutoff", ":forget"
        elif dialect == "mysql":
            self._now = "UTC_TIMESTAMP(6)"
            self._cutoff = f"({self._now} - INTERVAL :timeout_us MICROSECOND)"
            self._forget = f"({self._now} - INTERVAL {_FORGET_AFTER.days} DAY)"
        else:
            self._now = "(now() AT TIME ZONE 'UTC')"
            self._cutoff = f"({self._now} - make_interval(secs => :timeout))"
            self._forget = f"({self._now} - make_interval(days => {_FORGET_AFTER.days}))"

    def _params(self, **values: Any) -> dict[str, Any]:
        if self._sqlite:
            now = utcnow().replace(tzinfo=None)
            values["now"] = _text(now)
            values["cutoff"] = _text(now - timedelta(seconds=float(values.get("timeout", 0))))
            values["forget"] = _text(now - _FORGET_AFTER)
        elif self._dialect == "mysql":
            values["timeout_us"] = round(float(values.get("timeout", 0)) * 1_000_000)
        return values

    # -- this node ---------------------------------------------------------------------

    def register(self, name: str, host: str, pid: int, version: str) -> int:
        """Inserts a live node and returns its id."""
        t = _node()
        with self._writer.transaction() as conn:
            now: Any = utcnow() if self._sqlite else sa.literal_column(self._now)
            inserted = conn.execute(
                t.insert().values(
                    name=name,
                    host=host,
                    pid=pid,
                    version=version,
                    state=NodeState.LIVE,
                    started=now,
                    heartbeat=now,
                    pools={},
                    ended_by="",
                )
            )
            key = inserted.inserted_primary_key
            assert key is not None
            return int(key[0])

    def beat(self, node: int, pools: Mapping[str, Any]) -> bool:
        """Records a beat of ``node`` with its pools' load; False when the node is no
        longer live (another node found it dead and took its jobs over)."""
        text = sa.text(
            f"UPDATE node SET heartbeat = {self._now}, pools = :pools "
            "WHERE id = :id AND state = :live"
        )
        params = self._params(
            id=node, pools=json.dumps(dict(pools), sort_keys=True), live=NodeState.LIVE
        )
        with self._writer.transaction() as conn:
            return conn.execute(text, params).rowcount == 1

    def end(self, node: int) -> None:
        """Marks ``node`` stopped (its jobs handed back), and forgets nodes that ended
        long ago."""
        params = self._params(id=node, stopped=NodeState.STOPPED, live=NodeState.LIVE)
        with self._writer.transaction() as conn:
            conn.execute(
                sa.text(
                    f"UPDATE node SET state = :stopped, ended = {self._now} "
                    "WHERE id = :id AND state = :live"
                ),
                params,
            )

    # -- the others ----------------------------------------------------------------------

    def rows(self, timeout_s: float) -> list[dict[str, Any]]:
        """Every node not ended long ago, newest first, each with ``age_s`` (seconds
        since its beat, by the database's clock) and ``dead`` (live, but its beat is
        older than ``timeout_s``)."""
        t = _node()
        with self._writer.engine.connect() as conn:
            now = aware(conn.execute(sa.text(f"SELECT {self._now}"), self._params()).scalar_one())
            rows = conn.execute(t.select().order_by(t.c.id.desc())).mappings().all()
        result = []
        for row in rows:
            node = dict(row)
            for name in ("started", "heartbeat", "ended"):
                if node[name] is not None:
                    node[name] = aware(node[name])
            node["age_s"] = max((now - node["heartbeat"]).total_seconds(), 0.0)
            node["dead"] = node["state"] == NodeState.LIVE and node["age_s"] > timeout_s
            result.append(node)
        return result

    def live_on(self, host: str, exclude: Iterable[int]) -> list[tuple[int, int]]:
        """(id, pid) of the live nodes on ``host`` other than ``exclude``."""
        t = _node()
        query = sa.select(t.c.id, t.c.pid).where(
            t.c.state == NodeState.LIVE, t.c.host == host, t.c.id.not_in(list(exclude))
        )
        with self._writer.engine.connect() as conn:
            return [(int(i), int(p)) for i, p in conn.execute(query)]

    def others_live(self, node: int, timeout_s: float) -> int:
        """How many other nodes are live, their beat younger than ``timeout_s``."""
        text = sa.text(
            "SELECT count(*) FROM node WHERE state = :live AND id <> :id "
            f"AND heartbeat >= {self._cutoff}"
        )
        params = self._params(live=NodeState.LIVE, id=node, timeout=timeout_s)
        with self._writer.engine.connect() as conn:
            return int(conn.execute(text, params).scalar_one())

    def take_over(
        self, node: int, name: str, timeout_s: float, dead: Iterable[int] = ()
    ) -> list[TakenOver]:
        """Node ``node`` (named ``name``) marks ``gone`` every live node whose beat is
        older than ``timeout_s`` and the nodes ``dead`` (known gone: their process
        ended), then hands back as ``pending`` every running job of a node that is not
        live (or of no node), claimed by ``node`` from then on so that a dead node
        that still runs writes nothing to it. One transaction."""
        dead = list(dead)
        params = self._params(
            id=node,
            name=name,
            live=NodeState.LIVE,
            gone=NodeState.GONE,
            timeout=timeout_s,
            dead=dead or [-1],
        )
        mark = sa.text(
            f"UPDATE node SET state = :gone, ended = {self._now}, ended_by = :name "
            f"WHERE state = :live AND id <> :id AND (heartbeat < {self._cutoff} "
            "OR id IN :dead)"
        ).bindparams(sa.bindparam("dead", expanding=True))
        forget = sa.text(f"DELETE FROM node WHERE state <> :live AND ended < {self._forget}")
        taken: list[TakenOver] = []
        with self._writer.transaction() as conn:
            conn.execute(mark, params)
            names = {
                int(i): str(n)
                for i, n in conn.execute(
                    sa.text("SELECT id, name FROM node WHERE state <> :live"), params
                )
            }
            for table in JOB_TABLES:
                taken += self._hand_back(conn, table, params, names)
            conn.execute(forget, params)
        return taken

    def _hand_back(
        self, conn: sa.Connection, table: str, params: dict[str, Any], names: dict[int, str]
    ) -> list[TakenOver]:
        """Hands back as ``pending`` the running jobs of ``table`` whose node is not live
        (or that no node claimed), claimed by ``params["id"]``; what it handed back."""
        taken: list[TakenOver] = []
        kind = ", kind" if table == "job" else ""
        orphaned = (
            "status = :running AND (node_id IS NULL OR node_id NOT IN "
            "(SELECT id FROM node WHERE state = :live))"
        )
        job_params = {**params, "pending": Status.PENDING.value, "running": Status.RUNNING.value}
        # MySQL has no UPDATE … RETURNING: the rows are locked as they are read
        # (a second node taking over at once waits, then finds them pending),
        # and the update changes exactly those.
        lock = " FOR UPDATE" if self._dialect == "mysql" else ""
        ran_on = {
            int(row[0]): (row[1], str(row[2]) if kind else None)
            for row in conn.execute(
                sa.text(f"SELECT id, node_id{kind} FROM {table} WHERE {orphaned}{lock}"),
                job_params,
            )
        }
        hand_back = (
            f"UPDATE {table} SET status = :pending, update_time = {self._now}, "
            f"node_id = :id WHERE {orphaned}"
        )
        handed_back: Iterable[int]
        if not lock:
            handed_back = conn.execute(sa.text(f"{hand_back} RETURNING id"), job_params).scalars()
        elif ran_on:
            conn.execute(
                sa.text(f"{hand_back} AND id IN :ids").bindparams(
                    sa.bindparam("ids", expanding=True)
                ),
                {**job_params, "ids": list(ran_on)},
            )
            handed_back = list(ran_on)
        else:
            handed_back = []
        for job_id in sorted(int(i) for i in handed_back):
            node_id, job_kind = ran_on.get(job_id, (None, None))
            was = None if node_id is None else names.get(int(node_id), f"#{node_id}")
            taken.append(TakenOver(table, job_id, job_kind, was))
        return taken

    # -- stops across nodes ------------------------------------------------------------

    def request_stop(self, table: str, job_id: int) -> int | None:
        """Records a stop request on a ``running`` job; returns the node running it, or
        None when the job is not running (any more)."""
        _known(table)
        change = f"UPDATE {table} SET stop_requested = :yes WHERE id = :id AND status = :running"
        params = {"yes": True, "id": job_id, "running": Status.RUNNING.value}
        with self._writer.transaction() as conn:
            if self._dialect == "mysql":  # no UPDATE … RETURNING: lock, read, change
                row = conn.execute(
                    sa.text(
                        f"SELECT node_id FROM {table} WHERE id = :id AND status = :running "
                        "FOR UPDATE"
                    ),
                    params,
                ).first()
                if row is not None:
                    conn.execute(sa.text(change), params)
            else:
                row = conn.execute(sa.text(f"{change} RETURNING node_id"), params).first()
        return None if row is None else (int(row[0]) if row[0] is not None else -1)

    def stop_requests(self, node: int) -> list[tuple[str, int, str | None]]:
        """(table, job id, kind column) of the jobs running on ``node`` that another
        node was asked to stop."""
        found: list[tuple[str, int, str | None]] = []
        with self._writer.engine.connect() as conn:
            for table in JOB_TABLES:
                kind = ", kind" if table == "job" else ""
                rows = conn.execute(
                    sa.text(
                        f"SELECT id{kind} FROM {table} WHERE status = :running "
                        "AND node_id = :id AND stop_requested = :yes"
                    ),
                    {"running": Status.RUNNING.value, "id": node, "yes": True},
                ).all()
                found += [(table, int(r[0]), str(r[1]) if kind else None) for r in rows]
        return found

    def notify(self, payloads: Iterable[str]) -> None:
        """Sends ``payloads`` on :data:`CHANNEL` to every listening node (PostgreSQL;
        nothing on SQLite and MySQL, whose nodes poll)."""
        payloads = list(payloads)
        if self._dialect != "postgresql" or not payloads:
            return
        with self._writer.transaction() as conn:
            for payload in payloads:
                conn.execute(
                    sa.text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": CHANNEL, "payload": payload},
                )


def _node() -> sa.Table:
    return Node.__table__  # type: ignore[attr-defined]


def _text(value: datetime) -> str:
    """A naive UTC time as SQLite holds SQLAlchemy's ``DateTime``."""
    return value.isoformat(" ", "microseconds")


def _known(table: str) -> None:
    if table not in JOB_TABLES:
        raise KeyError(table)
