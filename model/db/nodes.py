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
Work queued by a process that runs no pool of its kind (a tool, an API-only process)
goes to one live node alone, on that node's own channel (:func:`node_channel`), as
``wake <kind> <node> pass``: the node takes what it can and, when that was not all,
wakes every node with ``wake <kind> <node>`` (:attr:`Nodes.wake_target`). MySQL has
no notifications: its nodes, as SQLite's, learn of both at their polls. The
statements themselves are in :mod:`model.db._sql_nodes`.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from model.db._sql_nodes import CHANNEL, node_channel, node_statements
from model.db._writer import Writer
from model.db.tables import JOB_TABLES, Node, NodeState, utcnow
from model.stamps import aware

__all__ = [
    "CHANNEL",
    "WAKE_TARGET_BEAT_S",
    "WAKE_TARGET_TTL_S",
    "Nodes",
    "TakenOver",
    "node_channel",
]

#: Seconds a process that queues work keeps the live node it wakes before it reads
#: the node table again.
WAKE_TARGET_TTL_S = 1.0
#: Seconds since its last beat within which a node is woken alone (two beats at the
#: default ``heartbeat_interval``): one that died is not sent work for long.
WAKE_TARGET_BEAT_S = 10.0


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
    """The node table of one store (see :attr:`model.db.Store.nodes`); its SQL is in
    :mod:`model.db._sql_nodes`."""

    def __init__(self, writer: Writer, dialect: str) -> None:
        self._writer = writer
        self._dialect = dialect
        self._sql = node_statements(dialect)
        self._target_lock = threading.Lock()
        self._target: int | None = None
        self._target_read = float("-inf")

    def _params(self, **values: Any) -> dict[str, Any]:
        return self._sql.time_params(**values)

    # -- this node ---------------------------------------------------------------------

    def register(self, name: str, host: str, pid: int, version: str) -> int:
        """Inserts a live node and returns its id."""
        t = _node()
        with self._writer.transaction() as conn:
            now: Any = utcnow() if self._dialect == "sqlite" else sa.literal_column(self._sql.now)
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
        params = self._params(
            id=node, pools=json.dumps(dict(pools), sort_keys=True), live=NodeState.LIVE
        )
        with self._writer.transaction() as conn:
            return conn.execute(sa.text(self._sql.beat), params).rowcount == 1

    def end(self, node: int) -> None:
        """Marks ``node`` stopped (its jobs handed back)."""
        params = self._params(id=node, stopped=NodeState.STOPPED, live=NodeState.LIVE)
        with self._writer.transaction() as conn:
            conn.execute(sa.text(self._sql.end), params)

    # -- the others ----------------------------------------------------------------------

    def rows(self, timeout_s: float) -> list[dict[str, Any]]:
        """Every node not ended long ago, newest first, each with ``age_s`` (seconds
        since its beat, by the database's clock) and ``dead`` (live, but its beat is
        older than ``timeout_s``)."""
        t = _node()
        with self._writer.engine.connect() as conn:
            now = aware(conn.execute(sa.text(self._sql.clock), self._params()).scalar_one())
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
        params = self._params(live=NodeState.LIVE, id=node, timeout=timeout_s)
        with self._writer.engine.connect() as conn:
            return int(conn.execute(sa.text(self._sql.others_live), params).scalar_one())

    def live_ids(self, timeout_s: float) -> list[int]:
        """The ids of the live nodes whose beat is younger than ``timeout_s``."""
        params = self._params(live=NodeState.LIVE, timeout=timeout_s)
        with self._writer.engine.connect() as conn:
            return [int(i) for (i,) in conn.execute(sa.text(self._sql.live_ids), params)]

    def wake_target(self) -> int | None:
        """The live node that work queued here wakes, None when none is known: one
        picked at random among those that beat in the last :data:`WAKE_TARGET_BEAT_S`,
        then kept while it beats (read again every :data:`WAKE_TARGET_TTL_S`), so that
        one process's jobs go to one node, which takes several at a claim, rather than
        to every node, each woken for one. A node that cannot take them all wakes the
        others (see the module's doc); a node that died unseen gets none after
        :data:`WAKE_TARGET_BEAT_S`, and what it got meanwhile the others' polls find."""
        with self._target_lock:
            now = time.monotonic()
            if now - self._target_read < WAKE_TARGET_TTL_S:
                return self._target
            try:
                live = self.live_ids(WAKE_TARGET_BEAT_S)
            except Exception:
                live = []  # every node is woken instead
            if self._target not in live:
                self._target = random.choice(live) if live else None
            self._target_read = now
            return self._target

    def take_over(
        self, node: int, name: str, timeout_s: float, dead: Iterable[int] = ()
    ) -> list[TakenOver]:
        """Node ``node`` (named ``name``) marks ``gone`` every live node whose beat is
        older than ``timeout_s`` and the nodes ``dead`` (known gone: their process
        ended), then hands back as ``pending`` every running job of a node that is not
        live (or of no node), claimed by ``node`` from then on so that a dead node
        that still runs writes nothing to it; and forgets nodes that ended long ago.
        One transaction, after a read that finds whether it has anything to do (the
        common case, every beat, is nothing: a read takes no write lock)."""
        dead = list(dead)
        params = self._params(
            id=node,
            name=name,
            live=NodeState.LIVE,
            gone=NodeState.GONE,
            timeout=timeout_s,
            dead=dead or [-1],
        )
        if not dead:
            with self._writer.engine.connect() as conn:
                if not conn.execute(sa.text(self._sql.anything_to_take), params).scalar_one():
                    return []
        mark = sa.text(self._sql.mark_gone).bindparams(sa.bindparam("dead", expanding=True))
        taken: list[TakenOver] = []
        with self._writer.transaction() as conn:
            conn.execute(mark, params)
            names = {
                int(i): str(n) for i, n in conn.execute(sa.text(self._sql.ended_names), params)
            }
            for table in JOB_TABLES:
                taken += self._hand_back(conn, table, params, names)
            conn.execute(sa.text(self._sql.forget), params)
        return taken

    def _hand_back(
        self, conn: sa.Connection, table: str, params: dict[str, Any], names: dict[int, str]
    ) -> list[TakenOver]:
        """Hands back as ``pending`` the running jobs of ``table`` whose node is not live
        (or that no node claimed), claimed by ``params["id"]``; what it handed back."""
        sql = self._sql.tables[table]
        scoped = sql.scoped
        # MySQL has no UPDATE … RETURNING: the rows are locked as they are read
        # (a second node taking over at once waits, then finds them pending),
        # and the update changes exactly those.
        ran_on = {
            int(row[0]): (row[1], str(row[2]) if scoped else None)
            for row in conn.execute(sa.text(sql.orphaned), params)
        }
        handed_back: Iterable[int]
        if self._dialect != "mysql":
            handed_back = conn.execute(sa.text(sql.hand_back), params).scalars()
        elif ran_on:
            hand_back = sa.text(sql.hand_back).bindparams(sa.bindparam("ids", expanding=True))
            conn.execute(hand_back, {**params, "ids": list(ran_on)})
            handed_back = list(ran_on)
        else:
            handed_back = []
        taken = []
        for job_id in sorted(int(i) for i in handed_back):
            node_id, job_kind = ran_on.get(job_id, (None, None))
            was = None if node_id is None else names.get(int(node_id), f"#{node_id}")
            taken.append(TakenOver(table, job_id, job_kind, was))
        return taken

    # -- stops across nodes ------------------------------------------------------------

    def request_stop(self, table: str, job_id: int) -> int | None:
        """Records a stop request on a ``running`` job; returns the node running it, or
        None when the job is not running (any more)."""
        sql = self._sql.tables[table]
        params = {"yes": True, "id": job_id}
        with self._writer.transaction() as conn:
            if self._dialect == "mysql":  # no UPDATE … RETURNING: lock, read, change
                row = conn.execute(sa.text(sql.request_stop_lock), params).first()
                if row is not None:
                    conn.execute(sa.text(sql.request_stop), params)
            else:
                row = conn.execute(sa.text(sql.request_stop), params).first()
        return None if row is None else (int(row[0]) if row[0] is not None else -1)

    def stop_requests(self, node: int) -> list[tuple[str, int, str | None]]:
        """(table, job id, kind column) of the jobs running on ``node`` that another
        node was asked to stop."""
        found: list[tuple[str, int, str | None]] = []
        with self._writer.engine.connect() as conn:
            for table, sql in self._sql.tables.items():
                rows = conn.execute(sa.text(sql.stop_requests), {"id": node, "yes": True}).all()
                found += [(table, int(r[0]), str(r[1]) if sql.scoped else None) for r in rows]
        return found

    def notify(self, payloads: Iterable[str], channel: str = CHANNEL) -> None:
        """Sends ``payloads`` on ``channel`` (every listening node by default;
        PostgreSQL, nothing on SQLite and MySQL, whose nodes poll)."""
        payloads = list(payloads)
        if self._dialect != "postgresql" or not payloads:
            return
        with self._writer.transaction() as conn:
            for payload in payloads:
                conn.execute(sa.text(self._sql.notify), {"channel": channel, "payload": payload})


def _node() -> sa.Table:
    return Node.__table__  # type: ignore[attr-defined]
