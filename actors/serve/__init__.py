"""The supervised process of ``jobservice serve``: the HTTP API and the job actors in
one process (:class:`ServeProcess`: signals, the start and stop of the service and of
uvicorn, the exit status a supervisor acts on), its log set-up
(:func:`configure_logging`) and the thread that deletes old job logs
(:class:`LogSweeper`, which follows the log tree's rules of :mod:`model.joblog`).

Importing this package loads the service and the HTTP API; the CLI imports it only
when it runs ``serve``.
"""

from __future__ import annotations

from actors.serve._logging import configure_logging
from actors.serve._process import (
    EXIT_ACTORS_DIED,
    EXIT_CONFIG,
    EXIT_HTTP_DIED,
    ServeProcess,
    exit_process,
)
from actors.serve._sweeper import LogSweeper, SweepResult

__all__ = [
    "EXIT_ACTORS_DIED",
    "EXIT_CONFIG",
    "EXIT_HTTP_DIED",
    "LogSweeper",
    "ServeProcess",
    "SweepResult",
    "configure_logging",
    "exit_process",
]
