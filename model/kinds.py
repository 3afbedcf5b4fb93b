"""Job kinds: what the engine knows of a kind of job.

A kind has a name, its job class, the setting (or number) that sizes its pool, the
table its jobs live in, and a function that adds its transitions to a state machine.
``replication`` and ``scan`` are built in; an embedding application registers its own
kinds, whose jobs live in the generic ``job`` table.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from model.errors import InvalidRequest, UnknownKind
from model.jobs import JobContext, KindJob, RepJob, ScanJob, StoredJob
from model.names import check_kind_name
from model.settings import Settings
from model.sm import SM, Job

__all__ = ["BUILTIN_KINDS", "SHARED_TABLE", "JobKind", "KindRegistry"]

#: The table the jobs of every registered kind share; its ``kind`` column tells them apart.
SHARED_TABLE = "job"

#: ``add_transitions(sm, job)``: adds a kind's transitions (from ``running`` on).
AddTransitions = Callable[[SM, Job], None]
#: ``check(params) -> params``: validates a submitted job's parameters.
CheckParams = Callable[[Mapping[str, Any]], Mapping[str, Any]]
#: ``open(ctx)`` / ``close(ctx)``: opens or releases a kind's shared resources.
Lifecycle = Callable[[JobContext], None]


@dataclass(frozen=True)
class JobKind:
    """One kind of job."""

    name: str
    add_transitions: AddTransitions
    #: A :class:`Settings` attribute naming the pool size, or the size itself.
    pool_size: str | int = 1
    job_class: type[StoredJob] = KindJob
    table: str = SHARED_TABLE
    #: Validates ``JobService.submit`` parameters (the default takes any JSON object).
    check_params: CheckParams | None = field(default=None)
    #: Opens the resources the kind's jobs share (attached to ``ctx.resources``).
    on_open: Lifecycle | None = field(default=None)
    #: Releases them once the workers have handed their jobs back.
    on_close: Lifecycle | None = field(default=None)

    def size(self, settings: Settings) -> int:
        """The number of workers of this kind's pool."""
        value = (
            getattr(settings, self.pool_size) if isinstance(self.pool_size, str) else self.pool_size
        )
        if not isinstance(value, int) or value < 1:
            raise InvalidRequest(
                "pool_size", f"kind {self.name!r} needs a pool size >= 1, got {value!r}"
            )
        return value

    @property
    def scope(self) -> str | None:
        """The ``kind`` column of this kind's rows in the shared table; None for a kind
        with a table of its own."""
        return self.name if self.table == SHARED_TABLE else None

    def owns(self, row: Mapping[str, Any]) -> bool:
        """Whether the job ``row`` (read from :attr:`table`) is of this kind."""
        return self.scope is None or row.get("kind") == self.name

    def make_job(
        self, ctx: JobContext, job_id: int, row: Mapping[str, Any] | None = None
    ) -> StoredJob:
        """The job object for one row."""
        return self.job_class(ctx, job_id, self.name, row)

    def open(self, ctx: JobContext) -> None:
        """Opens the resources this kind's jobs share in ``ctx.resources``: the service
        calls it once at its start, before any job of the kind runs."""
        if self.on_open is not None:
            self.on_open(ctx)

    def close(self, ctx: JobContext) -> None:
        """Releases what :meth:`open` opened: the service calls it once at its
        shutdown, after the workers have handed their jobs back. Safe without a
        previous :meth:`open`."""
        if self.on_close is not None:
            self.on_close(ctx)


def _lazy(module: str, name: str) -> Callable[..., None]:
    """``module.name``, imported when called: the kinds' packages import this module."""

    def call(*args: Any) -> None:
        getattr(importlib.import_module(module), name)(*args)

    call.__qualname__ = call.__name__ = f"{module}.{name}"
    return call


BUILTIN_KINDS = (
    JobKind(
        "replication",
        _lazy("model.replication", "add_transitions"),
        "max_job_workers",
        RepJob,
        "replication_job",
        on_open=_lazy("model.replication", "open_shared"),
        on_close=_lazy("model.replication", "close_shared"),
    ),
    JobKind(
        "scan",
        _lazy("model.scan", "add_transitions"),
        "scan_workers",
        ScanJob,
        "img_scan_job",
        on_open=_lazy("model.scan", "open_shared"),
        on_close=_lazy("model.scan", "close_shared"),
    ),
)


class KindRegistry:
    """The kinds one service runs, by name."""

    def __init__(self, kinds: Iterable[JobKind] = ()) -> None:
        self._kinds: dict[str, JobKind] = {}
        for kind in (*BUILTIN_KINDS, *kinds):
            self.register(kind)

    def register(self, kind: JobKind) -> None:
        """Adds ``kind``; raises :class:`InvalidRequest` for a bad or taken name."""
        check_kind_name(kind.name)
        if kind.name in self._kinds:
            raise InvalidRequest("kind", f"a kind named {kind.name!r} is already registered")
        if kind.scope is None and kind not in BUILTIN_KINDS:
            raise InvalidRequest(
                "kind", f"kind {kind.name!r}: registered kinds live in the 'job' table"
            )
        self._kinds[kind.name] = kind

    def __getitem__(self, name: str) -> JobKind:
        try:
            return self._kinds[name]
        except KeyError:
            raise UnknownKind(name, sorted(self._kinds)) from None

    def __iter__(self) -> Any:
        return iter(self._kinds.values())

    def names(self) -> list[str]:
        """Every registered kind's name."""
        return list(self._kinds)

    def of_row(self, table: str, kind: str | None) -> JobKind | None:
        """The kind of a job row of ``table`` whose ``kind`` column holds ``kind`` (None
        outside the shared table); None when no registered kind has such jobs."""
        for candidate in self._kinds.values():
            if candidate.table == table and (candidate.scope is None or candidate.name == kind):
                return candidate
        return None
