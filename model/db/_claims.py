"""The store's claims (see :class:`Claims`): the oldest due jobs taken ``running``,
alone or with the ends of the jobs that ran before them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from model.db._rows import from_columns as _from_columns
from model.db._sql import Statements
from model.db._writer import Writer
from model.errors import StatusConflict

__all__ = ["Claims"]


class Claims:
    """The claims of :class:`~model.db.store.Store`."""

    _writer: Writer
    _sql: Statements
    node: int | None
    set_status: Callable[..., None]
    set_statuses: Callable[..., set[int]]
    _status_write: Callable[..., tuple[str, dict[str, Any]]]
    _conflict: Callable[[str, int, str], StatusConflict]

    def end_and_claim(
        self,
        table: str,
        kind: str | None,
        ended: list[int],
        status: str,
        *,
        count_attempt: bool = False,
        limit: int = 1,
    ) -> tuple[set[int], list[dict[str, Any]]]:
        """:meth:`set_statuses` of ``ended`` to ``status``, then :meth:`claim_many` of up
        to ``limit`` jobs (of ``kind``): what each returns. One statement on PostgreSQL
        (one round trip, one transaction; :attr:`ends_with_claims`), the two calls
        elsewhere."""
        sql = self._sql
        node = self.node
        text = sql.end_and_claim(table, status, count_attempt, node is not None, kind is not None)
        if text is None:
            written = (
                self.set_statuses(table, ended, status, count_attempt=count_attempt)
                if ended
                else set()
            )
            return written, self.claim_many(table, kind, limit)
        params = {
            "ids": sql.ids(ended),
            "status": status,
            "now": sql.now(),
            "node": node,
            "kind": kind,
            "limit": limit,
        }

        def run(cur: Any) -> tuple[set[int], list[dict[str, Any]]]:
            cur.execute(text, params)
            found = cur.fetchall()
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, values, strict=True)) for values in found]
            written = {int(i) for i in rows[0].pop("ended_ids") or ()}
            for row in rows[1:]:
                row.pop("ended_ids")
            return written, [row for row in rows if row["id"] is not None]

        written, claimed = self._writer.apply(run)
        rows = [_from_columns(row) for row in claimed]
        rows.sort(key=lambda row: int(row["id"]))
        return written, rows

    def end_and_claim_next(
        self,
        table: str,
        kind: str | None,
        job_id: int,
        status: str,
        *,
        count_attempt: bool = False,
    ) -> dict[str, Any] | None:
        """:meth:`set_status` of ``job_id`` to ``status`` and, once that landed, the
        :meth:`claim` of the oldest due job (of ``kind``), in one write: the claimed row
        or None. Raises as :meth:`set_status` does, having claimed nothing."""
        if self._sql.in_steps:
            self.set_status(table, job_id, status, count_attempt=count_attempt)
            return self.claim(table, kind)
        end, end_params = self._status_write(table, job_id, status, None, count_attempt)
        claim = self._sql.claim(table, kind is not None)
        params = {"now": end_params["now"], "kind": kind, "limit": 1, "node": self.node}

        def run(cur: Any) -> tuple[bool, dict[str, Any] | None]:
            if cur.execute(end, end_params).rowcount != 1:
                return False, None
            found = cur.execute(claim, params).fetchall()  # stepped to the end
            if not found:
                return True, None
            return True, dict(zip([d[0] for d in cur.description], found[0], strict=True))

        ended, row = self._writer.apply(run)
        if not ended:
            raise self._conflict(table, job_id, status)
        return None if row is None else _from_columns(row)

    def claim(self, table: str, kind: str | None = None) -> dict[str, Any] | None:
        """Takes the oldest due job and sets it ``running``; returns its row or None."""
        rows = self.claim_many(table, kind, 1)
        return rows[0] if rows else None

    def claim_many(
        self, table: str, kind: str | None = None, limit: int = 1
    ) -> list[dict[str, Any]]:
        """Takes up to ``limit`` of the oldest due jobs (pending, or retrying whose time
        has come), sets them ``running`` and returns their rows, oldest first.

        The UPDATE is guarded on the claimable statuses, so of two claimants only one
        wins a job (PostgreSQL and MySQL: the pick skips rows another claimant has
        locked; MySQL runs it in steps of one transaction, :meth:`Statements.claim_steps`).
        """
        if self._sql.in_steps:
            return self._claim_in_steps(table, kind, limit)
        text = self._sql.claim(table, kind is not None)
        params: dict[str, Any] = {
            "now": self._sql.now(),
            "kind": kind,
            "limit": limit,
            "node": self.node,
        }

        def claim(cur: Any) -> list[dict[str, Any]]:
            cur.execute(text, params)
            found = cur.fetchall()
            names = [d[0] for d in cur.description] if found else []
            return [dict(zip(names, values, strict=True)) for values in found]

        rows = [_from_columns(row) for row in self._writer.apply(claim)]
        rows.sort(key=lambda row: int(row["id"]))
        return rows

    def _claim_in_steps(self, table: str, kind: str | None, limit: int) -> list[dict[str, Any]]:
        now = self._sql.now()
        params: dict[str, Any] = {"now": now, "kind": kind, "limit": limit, "node": self.node}

        def claim(cur: Any) -> list[dict[str, Any]]:
            # Chosen on the connection made: the server's version is known by then.
            steps = self._sql.claim_steps(table, kind is not None, self._writer.skip_locked)
            assert steps.read is not None
            ids = tuple(int(row[0]) for row in cur.execute(steps.pick, params).fetchall())
            if not ids:
                return []
            taken = cur.execute(steps.take, {**params, "ids": ids}).rowcount
            found = cur.execute(steps.read, {**params, "ids": ids}).fetchall()
            if len(found) != taken:  # never a job set running that nobody runs
                raise RuntimeError(
                    f"claim of {table}: {taken} jobs taken but {len(found)} read back"
                )
            names = [d[0] for d in cur.description]
            return [dict(zip(names, values, strict=True)) for values in found]

        rows = [_from_columns(row) for row in self._writer.apply(claim, atomic=True)]
        rows.sort(key=lambda row: int(row["id"]))
        return rows
