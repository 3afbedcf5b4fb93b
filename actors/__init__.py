"""Who runs jobs: the dispatcher, the pools, the workers, and the embedded service.

``JobService`` is imported on first use, so the CLI's client commands start quickly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["JobService"]

if TYPE_CHECKING:
    from actors.service import JobService


def __getattr__(name: str) -> Any:
    if name == "JobService":
        from actors.service import JobService

        return JobService
    raise AttributeError(f"module 'actors' has no attribute {name!r}")
