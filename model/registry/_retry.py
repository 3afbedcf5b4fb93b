"""Retries inside a step: idempotent registry requests tried again a few times with
exponential backoff, waits that a stop of the job ends at once.

A wait between two tries goes through the calling thread's
:class:`~model.interrupt.Interrupt` (a worker's, or the one a worker lent to the
threads that copy its blobs): a stop requested before or during the wait raises
:class:`~model.errors.StopRequested`, so a stop always wins over a retry. A thread
with no interrupt (a client used outside a job) just sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from model.errors import StopRequested
from model.interrupt import current
from model.registry._errors import RegistryUnavailableError

__all__ = ["DEFAULT_RETRY", "RetryPolicy", "check_stop", "pause", "retrying"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a failed request is tried again within one step."""

    #: Tries of one request in a row that moved nothing (the first one included).
    attempts: int = 5
    #: Seconds before the second try; each later wait doubles, up to ``max_delay_s``.
    first_delay_s: float = 0.2
    max_delay_s: float = 5.0
    #: Longest ``Retry-After`` (seconds) waited for inside a step; a registry that asks
    #: for longer gets its answer raised, and the job's own retry honours the delay.
    max_retry_after_s: float = 10.0

    def delay_s(self, failures: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait after the ``failures``-th failure in a row (1 for the first),
        or ``None`` when no further try is due (tries exhausted, or a ``retry_after``
        longer than :attr:`max_retry_after_s`)."""
        if failures >= self.attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after_s else None
        return min(self.max_delay_s, self.first_delay_s * 2 ** (failures - 1))


#: The policy of replication steps.
DEFAULT_RETRY = RetryPolicy()


def check_stop() -> None:
    """Raises :class:`StopRequested` when a stop of the calling worker's job was
    requested."""
    interrupt = current()
    if interrupt is not None:
        interrupt.check()


def pause(seconds: float) -> None:
    """Waits ``seconds``; raises :class:`StopRequested` as soon as a stop of the calling
    worker's job is requested (before or during the wait)."""
    interrupt = current()
    if interrupt is None:
        time.sleep(seconds)
        return
    interrupt.check()
    if interrupt.wait(seconds):
        raise StopRequested(interrupt.job_id)


def retrying(request: Callable[[], _T], policy: RetryPolicy = DEFAULT_RETRY) -> _T:
    """``request()``, tried again after a :class:`RegistryUnavailableError` (network
    failure, 5xx, 429) as ``policy`` says; the last failure is raised. Only for
    requests that may be sent twice (GET, HEAD, PUT of a manifest, opening an upload
    session). Raises :class:`StopRequested` when a stop is requested meanwhile."""
    failures = 0
    while True:
        check_stop()
        try:
            return request()
        except RegistryUnavailableError as exc:
            failures += 1
            delay = policy.delay_s(failures, exc.retry_after)
            check_stop()  # a stop that shut the request's socket down is no failure
            if delay is None:
                raise
            pause(delay)
