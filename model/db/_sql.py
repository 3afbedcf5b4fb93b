"""Every SQL statement the store runs as text, named, and built once per dialect.

The engine's writes and its status read run as plain DBAPI statements (SQLAlchemy's
cost per statement is several times SQLite's own), so their text lives here, one
template per statement with the table and the dialect's differences filled in:
SQLite's ``sqlite3`` takes ``:name`` parameters, PostgreSQL's psycopg and MySQL's
PyMySQL ``%(name)s``; PostgreSQL returns a new id with ``RETURNING id`` and claims with
``FOR UPDATE SKIP LOCKED``, where SQLite (one writer at a time) needs neither. MySQL
(MariaDB) has no ``UPDATE … RETURNING`` (nor, before MariaDB 10.6, ``SKIP LOCKED``): its claims and
stops of waiting jobs are steps of one transaction (:class:`Steps`): lock the rows,
change them with the same guard, read them.

:func:`statements_for` gives a dialect's :class:`Statements`; the statements of every
job table are built when it is made, except those whose columns the caller chooses
(:meth:`Statements.insert`, :meth:`Statements.stop_waiting`), built on first use and
kept. Reads off the hot path stay SQLAlchemy Core expressions in the store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

import sqlalchemy as sa

from model.db.tables import JOB_TABLES
from model.stamps import db_stamp, now_us
from model.status import ALLOWED_FROM, CLAIMABLE, Status

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

__all__ = [
    "ALLOWED_FROM",  # model.status's, for the store
    "DIALECTS",
    "Guard",
    "Statements",
    "Steps",
    "dialect_of",
    "statements_for",
]

# -- the templates: {table}, {lock}, {scope} … are filled per table and dialect ----------


def _with_statuses(template: str) -> str:
    """``template`` with ``{pending}``, ``{running}`` and ``{stopped}`` written as the
    SQL strings of those statuses (the other fields stay for the dialect's turn)."""
    for status in (Status.PENDING, Status.RUNNING, Status.STOPPED):
        template = template.replace(f"{{{status.value}}}", f"'{status.value}'")
    return template


#: The status of one job (``:id``).
_STATUS = "SELECT status FROM {table} WHERE id = :id"

#: Whether a job (of ``:kind`` when scoped) is due: a read, where a claim is a write.
_DUE = _with_statuses(
    "SELECT 1 FROM {table} WHERE status IN ({claimable}) "
    "AND (status = {pending} OR next_attempt_at <= :now) {scope}LIMIT 1"
)

#: A guarded status change: ``:status``, ``:now`` (and ``:due``) set where the job
#: (``:id``) holds one of the statuses in ``{guard}`` (and, fenced, where no other node
#: than ``:node`` claimed it: a node found dead and still running writes nothing).
_SET_STATUS = "UPDATE {table} SET {sets} WHERE id = :id AND status IN ({guard}){fence}"
_FENCE = " AND (node_id = :node OR node_id IS NULL)"

#: :data:`_SET_STATUS` for the jobs ``:ids``, each guarded as one; returns the ids it
#: changed ({returning}; MySQL has no RETURNING: its row count says whether all were).
_SET_STATUSES = "UPDATE {table} SET {sets} WHERE {ids} AND status IN ({guard}){fence}{returning}"
#: The jobs ``:ids``: a list on PostgreSQL, a tuple on MySQL, a JSON array on SQLite.
_IDS = {
    "postgresql": "id = ANY(:ids)",
    "mysql": "id IN :ids",
    "sqlite": "id IN (SELECT value FROM json_each(:ids))",
}

#: Takes up to ``:limit`` of the oldest due jobs (of ``:kind`` when scoped) and sets
#: them running on node ``:node``. The pick is a materialized CTE, run once: a
#: ``WHERE id IN (SELECT … LIMIT n)`` may be planned as a join that runs the subquery
#: again for each row, and with ``SKIP LOCKED`` each run picks other rows, so such a
#: claim took many more than ``n`` jobs. The UPDATE names the picked ids and nothing
#: else: the pick locked them (PostgreSQL's ``FOR UPDATE`` checks its WHERE again on the
#: newest version of a row changed meanwhile; on SQLite the statement holds the write
#: lock), so they are still claimable. A status guard there let the planner reach them
#: through the claim index instead of by id, and with statistics taken while few jobs
#: waited it walked every waiting job once per picked one (3,000 waiting: 2 ms a claim).
_CLAIM = _with_statuses(
    "WITH picked AS MATERIALIZED (SELECT id FROM {table} "
    "WHERE status IN ({claimable}) "
    "AND (status = {pending} OR next_attempt_at <= :now) {scope}"
    "ORDER BY id LIMIT :limit{lock}) "
    "UPDATE {table} SET status = {running}, update_time = :now, node_id = :node "
    "WHERE id IN (SELECT id FROM picked) RETURNING *"
)

#: PostgreSQL: :data:`_SET_STATUSES` of the jobs ``:ids`` (its ``{end}``) and
#: :data:`_CLAIM` in one statement, one round trip: a pool's ends and its next claim.
#: One row at least: the ids the end changed (``ended_ids``, NULL for none), then the
#: claimed rows' columns (NULL when it claimed none). The two changes touch disjoint
#: rows (running ones, claimable ones); the claim's UPDATE is :data:`_CLAIM`'s.
_END_AND_CLAIM = _with_statuses(
    "WITH ended AS ({end}), "
    "picked AS MATERIALIZED (SELECT id FROM {table} "
    "WHERE status IN ({claimable}) "
    "AND (status = {pending} OR next_attempt_at <= :now) {scope}"
    "ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED), "
    "claimed AS (UPDATE {table} SET status = {running}, update_time = :now, node_id = :node "
    "WHERE id IN (SELECT id FROM picked) RETURNING *) "
    "SELECT (SELECT array_agg(id) FROM ended) AS ended_ids, claimed.* "
    "FROM (VALUES (1)) AS one LEFT JOIN claimed ON true"
)

#: MySQL's claim, three steps of one transaction (READ COMMITTED): lock up to ``:limit``
#: of the oldest due jobs; set those ``:ids`` running with the claim's guard; read back
#: the rows this claim set (its node: not its time, which Harbor's whole-second
#: ``TIMESTAMP`` columns round). The rows stay locked from the pick to
#: the commit, so the guard holds for each and a claim takes at most ``:limit`` jobs.
#: The pick skips rows another claimant holds ({lock}: ``SKIP LOCKED``); a server
#: without it (MariaDB before 10.6) waits for them instead, and InnoDB's locking read
#: then sees their committed status: a row another claimant took no longer matches.
_CLAIM_PICK = _with_statuses(
    "SELECT id FROM {table} WHERE status IN ({claimable}) "
    "AND (status = {pending} OR next_attempt_at <= :now) {scope}"
    "ORDER BY id LIMIT :limit FOR UPDATE{lock}"
)
_CLAIM_TAKE = _with_statuses(
    "UPDATE {table} SET status = {running}, update_time = :now, node_id = :node "
    "WHERE id IN :ids AND status IN ({claimable})"
)
_CLAIM_READ = _with_statuses(
    "SELECT * FROM {table} WHERE id IN :ids AND status = {running} AND node_id <=> :node"
)

#: One new row with the given columns (each a parameter of its name).
_INSERT = "INSERT INTO {table} ({names}) VALUES ({marks}){returning}"

#: Every waiting job whose columns equal the ``:eq_<column>`` parameters is stopped;
#: returns their ids.
_STOP_WAITING = _with_statuses(
    "UPDATE {table} SET status = {stopped}, update_time = :now "
    "WHERE status IN ({claimable}){equal} RETURNING id"
)


#: MySQL's :data:`_STOP_WAITING`: lock the waiting jobs (waiting for rows another
#: transaction holds, then reading their committed status), then stop those ``:ids``.
_STOP_WAITING_PICK = "SELECT id FROM {table} WHERE status IN ({claimable}){equal} FOR UPDATE"
_STOP_WAITING_TAKE = _with_statuses(
    "UPDATE {table} SET status = {stopped}, update_time = :now "
    "WHERE id IN :ids AND status IN ({claimable})"
)


class Guard(StrEnum):
    """The statement that guards a queueing (:meth:`model.db.Store.queue`), run first in
    its transaction: it changes one row, or none when another node or an earlier
    delivery got there first (then nothing is queued). ``:now`` is the store's."""

    #: Records the registry event ``:id`` (SQLite's and PostgreSQL's ``ON CONFLICT``,
    #: MySQL's ``INSERT IGNORE``: see :meth:`Statements.text`).
    FIRST_SIGHTING = (
        "INSERT INTO registry_event (id, received) VALUES (:id, :now) ON CONFLICT (id) DO NOTHING"
    )
    #: Moves schedule ``:id`` (enabled: ``:yes``) from the slot ``:due`` to ``:next``.
    SCHEDULE_SLOT = (
        "UPDATE schedule SET next_fire_at = :next, last_fired_at = :now, update_time = :now "
        "WHERE id = :id AND next_fire_at = :due AND enabled = :yes"
    )


#: The dialects the store knows: SQLite, PostgreSQL, and MySQL (MariaDB).
DIALECTS = ("sqlite", "postgresql", "mysql")


class Steps(NamedTuple):
    """A change that MySQL runs in steps of one transaction: ``pick`` locks the rows and
    returns their ids, ``take`` changes the rows ``:ids`` (guarded as the one-statement
    form is), ``read`` (when not None) returns their rows."""

    pick: str
    take: str
    read: str | None


def dialect_of(url: str) -> str:
    """The dialect of a SQLAlchemy URL, one of :data:`DIALECTS` (``mariadb`` is
    ``mysql``); raises ValueError for another database."""
    name = sa.make_url(url).get_backend_name()
    name = "mysql" if name == "mariadb" else name
    if name not in DIALECTS:
        raise ValueError(f"unsupported database {name!r}: SQLite, PostgreSQL or MySQL")
    return name


def _known_table(table: str) -> None:
    """Raises KeyError for a table that is not a job table (names go into SQL text)."""
    if table not in JOB_TABLES:
        raise KeyError(table)


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


class Statements:
    """The statements of one dialect, by name. Immutable once built but for the
    statements built on first use; safe to share between threads (a statement built
    twice by two threads at once is the same text)."""

    #: The dialect, one of :data:`DIALECTS`.
    dialect: str
    #: Whether the dialect is SQLite (``:name`` parameters, no ``RETURNING id`` on
    #: inserts, no row locks in claims).
    sqlite: bool
    #: Whether the database has notifications (PostgreSQL's ``NOTIFY``); the others'
    #: nodes learn of new work by polling.
    notifies: bool
    #: Whether claims and stops of waiting jobs run in :class:`Steps` (MySQL, which
    #: has no ``UPDATE … RETURNING``).
    in_steps: bool

    def __init__(self, dialect: str) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}")
        self.dialect = dialect
        self.sqlite = dialect == "sqlite"
        self.notifies = dialect == "postgresql"
        self.in_steps = dialect == "mysql"
        self._lazy: dict[tuple[Any, ...], Any] = {}
        self._status = {t: self._text(_STATUS.format(table=t)) for t in JOB_TABLES}
        self._set_status = {
            (t, status, due, count, fenced): self._set_status_text(t, status, due, count, fenced)
            for t in JOB_TABLES
            for status in ALLOWED_FROM
            for due in (False, True)
            for count in (False, True)
            for fenced in (False, True)
        }
        self._claim = {
            (t, scoped): self._claim_text(t, scoped) for t in JOB_TABLES for scoped in (False, True)
        }
        self._due = {
            (t, scoped): self._text(
                _DUE.format(
                    table=t,
                    claimable=_quoted(CLAIMABLE),
                    scope="AND kind = :kind " if scoped else "",
                )
            )
            for t in JOB_TABLES
            for scoped in (False, True)
        }

    # -- by name ---------------------------------------------------------------------

    def status(self, table: str) -> str:
        """Reads one job's status: ``:id``. Raises KeyError for an unknown table."""
        return self._status[table]

    def set_statuses(self, table: str, status: str, count_attempt: bool, fenced: bool) -> str:
        """:meth:`set_status` of several jobs (no due time): ``:ids`` (see
        :meth:`ids`), ``:status``, ``:now`` (and ``:node``). Returns the ids changed,
        except on MySQL. Raises KeyError for an unknown table or status."""
        key = ("set_statuses", table, status, count_attempt, fenced)
        found = self._lazy.get(key)
        if found is None:
            _known_table(table)
            returning = "" if self.in_steps else " RETURNING id"
            found = self._lazy[key] = self._text(
                self._set_many(table, status, count_attempt, fenced, returning)
            )
        return found

    def end_and_claim(
        self, table: str, status: str, count_attempt: bool, fenced: bool, scoped: bool
    ) -> str | None:
        """PostgreSQL: :meth:`set_statuses` and :meth:`claim` in one statement
        (:data:`_END_AND_CLAIM`; the parameters of both); None on the other dialects.
        Raises KeyError for an unknown table or status."""
        if self.dialect != "postgresql":
            return None
        key = ("end_and_claim", table, status, count_attempt, fenced, scoped)
        found = self._lazy.get(key)
        if found is None:
            _known_table(table)
            end = self._set_many(table, status, count_attempt, fenced, " RETURNING id")
            found = self._lazy[key] = self._text(
                _END_AND_CLAIM.format(
                    end=end,
                    table=table,
                    claimable=_quoted(CLAIMABLE),
                    scope="AND kind = :kind " if scoped else "",
                )
            )
        return found

    def ids(self, ids: Iterable[int]) -> Any:
        """Job ids as the dialect's ``:ids`` parameter takes them."""
        if self.sqlite:
            return "[" + ",".join(str(int(i)) for i in ids) + "]"
        return list(ids) if self.notifies else tuple(ids)

    def due(self, table: str, scoped: bool) -> str:
        """Reads whether a job is due: ``:now``, and ``:kind`` when ``scoped``. Raises
        KeyError for an unknown table."""
        return self._due[(table, scoped)]

    def set_status(
        self, table: str, status: str, due: bool, count_attempt: bool, fenced: bool = False
    ) -> str:
        """The guarded change to ``status`` (see :data:`ALLOWED_FROM`): ``:id``,
        ``:status``, ``:now``, and ``:due`` (``next_attempt_at``) when ``due``;
        ``count_attempt`` adds one to ``attempts``; ``fenced``: only a job that node
        ``:node`` claimed, or none did. Raises KeyError for an unknown table or
        status."""
        return self._set_status[(table, status, due, count_attempt, fenced)]

    def claim(self, table: str, scoped: bool) -> str:
        """Claims due jobs, oldest first, for node ``:node`` (None: no node), returning
        their rows: ``:now``, ``:limit``, and ``:kind`` when ``scoped``. Raises KeyError
        for an unknown table."""
        return self._claim[(table, scoped)]

    def claim_steps(self, table: str, scoped: bool, skip_locked: bool = True) -> Steps:
        """MySQL's :meth:`claim`: the pick (``:now``, ``:limit``, ``:kind`` when
        ``scoped``), the take (``:ids``, ``:now``, ``:node``) and the read (``:ids``,
        ``:node``). ``skip_locked``: the server has ``SKIP LOCKED``. Raises
        KeyError for an unknown table."""
        key = ("claim_steps", table, scoped, skip_locked)
        found = self._lazy.get(key)
        if found is None:
            _known_table(table)
            fill = {
                "table": table,
                "claimable": _quoted(CLAIMABLE),
                "scope": "AND kind = :kind " if scoped else "",
                "lock": " SKIP LOCKED" if skip_locked else "",
            }
            found = self._lazy[key] = Steps(
                self._text(_CLAIM_PICK.format(**fill)),
                self._text(_CLAIM_TAKE.format(**fill)),
                self._text(_CLAIM_READ.format(**fill)),
            )
        return found

    def insert(self, table: str, columns: tuple[str, ...]) -> str:
        """Inserts one row of ``columns`` (each a parameter of its name); on PostgreSQL
        the statement returns the new id, on SQLite and MySQL it is the cursor's
        ``lastrowid`` (a statement without a row to return runs in one step)."""
        key = ("insert", table, columns)
        found = self._lazy.get(key)
        if found is None:
            _known_table(table)
            found = self._lazy[key] = self._text(
                _INSERT.format(
                    table=table,
                    names=", ".join(columns),
                    marks=", ".join(f":{name}" for name in columns),
                    returning=" RETURNING id" if self.dialect == "postgresql" else "",
                )
            )
        return found

    def with_notify(self, insert: str) -> str:
        """PostgreSQL: an :meth:`insert` that also notifies ``%(channel)s`` with
        ``%(payload)s``, in one statement; returns the new id."""
        return (
            f"WITH inserted AS ({insert}) "
            "SELECT id, pg_notify(%(channel)s, %(payload)s) FROM inserted"
        )

    def stop_waiting(self, table: str, columns: tuple[str, ...]) -> str:
        """Stops every pending or retrying job whose ``columns`` equal the parameters
        ``:eq_<column>``, returning their ids: ``:now``."""
        key = ("stop_waiting", table, columns)
        found = self._lazy.get(key)
        if found is None:
            _known_table(table)
            equal = "".join(f" AND {name} = :eq_{name}" for name in columns)
            found = self._lazy[key] = self._text(
                _STOP_WAITING.format(table=table, claimable=_quoted(CLAIMABLE), equal=equal)
            )
        return found

    def stop_waiting_steps(self, table: str, columns: tuple[str, ...]) -> Steps:
        """MySQL's :meth:`stop_waiting`: the pick (``:eq_<column>``) and the take
        (``:ids``, ``:now``); no read."""
        key = ("stop_waiting_steps", table, columns)
        found = self._lazy.get(key)
        if found is None:
            _known_table(table)
            equal = "".join(f" AND {name} = :eq_{name}" for name in columns)
            fill = {"table": table, "claimable": _quoted(CLAIMABLE), "equal": equal}
            found = self._lazy[key] = Steps(
                self._text(_STOP_WAITING_PICK.format(**fill)),
                self._text(_STOP_WAITING_TAKE.format(**fill)),
                None,
            )
        return found

    # -- values in the dialect's stored form ------------------------------------------

    def now(self) -> Any:
        """Now, as the dialect stores SQLAlchemy's naive UTC ``DateTime``."""
        return db_stamp(now_us()) if self.sqlite else datetime.now(UTC).replace(tzinfo=None)

    def now_as_read(self) -> tuple[Any, datetime]:
        """:meth:`now`, and the same time as a row read back gives it (aware UTC)."""
        if self.sqlite:
            us = now_us()
            return db_stamp(us), _EPOCH + timedelta(microseconds=us)
        now = datetime.now(UTC)
        return now.replace(tzinfo=None), now

    def time(self, value: datetime) -> Any:
        """``value`` as the dialect stores SQLAlchemy's ``DateTime``: naive UTC, as text
        on SQLite."""
        naive = value.astimezone(UTC).replace(tzinfo=None)
        return naive.isoformat(" ", "microseconds") if self.sqlite else naive

    def inserted_id(self, cursor: Any) -> int:
        """The id of the row the cursor's last :meth:`insert` made."""
        if self.dialect == "postgresql":
            return int(cursor.fetchall()[0][0])
        return int(cursor.lastrowid)

    def text(self, sql: str) -> str:
        """``sql`` written with ``:name`` parameters, in the dialect's style. On MySQL an
        ``INSERT … ON CONFLICT (…) DO NOTHING`` (SQLite's and PostgreSQL's) is written
        ``INSERT IGNORE …``: a duplicate key inserts nothing and changes no row."""
        if self.dialect == "mysql":
            sql, conflicts = _ON_CONFLICT.subn("", sql)
            if conflicts:
                sql = re.sub(r"^\s*INSERT\b", "INSERT IGNORE", sql, count=1, flags=re.I)
        return self._text(sql)

    # -- building ----------------------------------------------------------------------

    def _set_many(
        self, table: str, status: str, count_attempt: bool, fenced: bool, returning: str
    ) -> str:
        sets = "status = :status, update_time = :now"
        if count_attempt:
            sets += ", attempts = attempts + 1"
        return _SET_STATUSES.format(
            table=table,
            sets=sets,
            ids=_IDS[self.dialect],
            guard=_quoted(sorted(ALLOWED_FROM[status])),
            fence=_FENCE if fenced else "",
            returning=returning,
        )

    def _text(self, sql: str) -> str:
        return sql if self.sqlite else re.sub(r":(\w+)", r"%(\1)s", sql)

    def _set_status_text(
        self, table: str, status: str, due: bool, count: bool, fenced: bool
    ) -> str:
        sets = "status = :status, update_time = :now"
        if due:
            sets += ", next_attempt_at = :due"
        if count:
            sets += ", attempts = attempts + 1"
        guard = _quoted(sorted(ALLOWED_FROM[status]))
        fence = _FENCE if fenced else ""
        return self._text(_SET_STATUS.format(table=table, sets=sets, guard=guard, fence=fence))

    def _claim_text(self, table: str, scoped: bool) -> str:
        return self._text(
            _CLAIM.format(
                table=table,
                claimable=_quoted(CLAIMABLE),
                scope="AND kind = :kind " if scoped else "",
                lock="" if self.sqlite else " FOR UPDATE SKIP LOCKED",
            )
        )


#: The clause :meth:`Statements.text` rewrites on MySQL.
_ON_CONFLICT = re.compile(r"\s+ON\s+CONFLICT\s*\([^)]*\)\s*DO\s+NOTHING", re.I)

_BY_DIALECT: dict[str, Statements] = {}


def statements_for(dialect: str) -> Statements:
    """The statements of ``dialect`` (one of :data:`DIALECTS`), built on the first call."""
    found = _BY_DIALECT.get(dialect)
    if found is None:
        found = _BY_DIALECT.setdefault(dialect, Statements(dialect))
    return found
