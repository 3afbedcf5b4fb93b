"""The supervised processes of ``jobservice serve`` (:class:`ServeProcess`: the HTTP
API and the job actors) and ``jobservice worker`` (:class:`WorkerProcess`: the job
actors alone), which share :class:`ServiceProcess` (signals, the start and stop of
the service, the exit status a supervisor acts on); their log set-up
(:func:`configure_logging`) and the thread that deletes old job logs
(:class:`LogSweeper`, which follows the log tree's rules of :mod:`model.joblog`).

Importing this package loads the service; the HTTP API and uvicorn are loaded on
first use of :class:`ServeProcess`, so a worker never loads them. The CLI imports
this package only when it runs ``serve`` or ``worker``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.serve._logging import configure_logging
from actors.serve._process import (
    EXIT_ACTORS_DIED,
    EXIT_CONFIG,
    EXIT_HTTP_DIED,
    ServiceProcess,
    exit_process,
)
from actors.serve._sweeper import LogSweeper, SweepResult
from actors.serve._worker import WorkerProcess

if TYPE_CHECKING:
    from actors.serve._serve import ServeProcess

__all__ = [
    "EXIT_ACTORS_DIED",
    "EXIT_CONFIG",
    "EXIT_HTTP_DIED",
    "LogSweeper",
    "ServeProcess",
    "ServiceProcess",
    "SweepResult",
    "WorkerProcess",
    "configure_logging",
    "exit_process",
]


def __getattr__(name: str) -> Any:
    if name == "ServeProcess":
        from actors.serve._serve import ServeProcess

        return ServeProcess
    raise AttributeError(f"module 'actors.serve' has no attribute {name!r}")
