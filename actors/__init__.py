"""Who runs jobs: the dispatcher, the pools, the workers, and the embedded service."""

from __future__ import annotations

from actors.service import JobService

__all__ = ["JobService"]
