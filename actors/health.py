"""What a service knows of its database's health: the last problem each check found,
and a line in the service's log when a problem starts, changes or ends."""

from __future__ import annotations

import threading

from loguru import logger

from model.db import Store

__all__ = ["DATABASE_PROBE_TIMEOUT_S", "DatabaseWatch"]

#: Seconds the database's write probe (:meth:`DatabaseWatch.problem`) may wait.
DATABASE_PROBE_TIMEOUT_S = 1.0


class DatabaseWatch:
    """The last problem each database check (``file``, ``probe``) found."""

    def __init__(self) -> None:
        self._problems: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def problem(self, store: Store, *, probe: bool = False) -> str | None:
        """Why the database of ``store`` cannot take writes now, or None.

        Without ``probe``: whether the SQLite file is still the one opened (a ``stat``
        at most once a second, cheap enough for every request). With ``probe``: also a
        write probe on a connection of its own, waiting at most
        :data:`DATABASE_PROBE_TIMEOUT_S` (see :meth:`Store.check_writable`). The
        service's log gets a line when a problem starts, changes or ends.
        """
        problem = store.file_problem()
        self._note("file", problem)
        if problem is None and probe:
            problem = store.check_writable(DATABASE_PROBE_TIMEOUT_S)
            self._note("probe", problem)
        return problem

    def _note(self, check: str, problem: str | None) -> None:
        with self._lock:
            before = self._problems.get(check)
            self._problems[check] = problem
        if problem == before:
            return
        if problem is None:
            logger.info("the database takes writes again ({} was: {})", check, before)
        elif check == "file":
            logger.error(
                "{}: every API request is answered 503 until the service is restarted "
                "(running jobs write into the old file, which nothing will read again)",
                problem,
            )
        else:
            logger.error("{}: /healthz answers 503 until it can", problem)
