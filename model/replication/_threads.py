"""The threads of one job run: requests sent in parallel under the worker's interrupt."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

from model.interrupt import current

__all__ = ["RunThreads"]

_T = TypeVar("_T")
_R = TypeVar("_R")


class RunThreads:
    """Thread pools of one job run, one per width, made on first use, their threads
    named after ``name``; :meth:`shutdown` ends them. Used from the worker's thread."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._pools: dict[int, ThreadPoolExecutor] = {}

    def map(self, work: Callable[[_T], _R], items: list[_T], width: int) -> list[_R]:
        """``work(item)`` for every item, in the pool of ``width`` threads when there
        are several; returns the results in order once all have ended, or raises the
        first exception once all have ended. The pool's threads run under the calling
        worker's interrupt, so a stop ends their waits and requests too."""
        if len(items) == 1:
            return [work(items[0])]
        interrupt = current()

        def bound(item: _T) -> _R:
            if interrupt is not None:
                interrupt.bind()
            return work(item)

        pool = self._pools.get(width)
        if pool is None:
            pool = self._pools[width] = ThreadPoolExecutor(width, thread_name_prefix=self._name)
        futures: list[Future[_R]] = [pool.submit(bound, item) for item in items]
        wait(futures)
        return [future.result() for future in futures]

    def shutdown(self) -> None:
        """Ends the pools once their work has ended."""
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.shutdown(wait=True)
