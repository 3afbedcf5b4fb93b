"""Job kinds: what the engine knows of a kind of job.

A kind has a name, its job class, the setting (or number) that sizes its pool, the
table its jobs live in, and a function that adds its transitions to a state machine.
``replication`` and ``scan`` are built in; an embedding application registers its own
kinds, whose jobs live in the generic ``job`` table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from model.errors import InvalidRequest, UnknownKind
from model.jobs import JobContext, KindJob, RepJob, ScanJob, StoredJob
from model.names import check_kind_name
from model.settings import Settings
from model.sm import SM, Job

__all__ = ["BUILTIN_KINDS", "JobKind", "KindRegistry"]

#: ``add_transitions(sm, job)``: adds a kind's transitions (from ``running`` on).
AddTransitions = Callable[[SM, Job], None]
#: ``check(params) -> params``: validates a submitted job's parameters.
CheckParams = Callable[[Mapping[str, Any]], Mapping[str, Any]]


@dataclass(frozen=True)
class JobKind:
    """One kind of job."""

    name: str
    add_transitions: AddTransitions
    #: A :class:`Settings` attribute naming the pool size, or the size itself.
    pool_size: str | int = 1
    job_class: type[StoredJob] = KindJob
    table: str = "job"
    #: Validates ``JobService.submit`` parameters (the default takes any JSON object).
    check_params: CheckParams | None = field(default=None)

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

    def make_job(
        self, ctx: JobContext, job_id: int, row: Mapping[str, Any] | None = None
    ) -> StoredJob:
        """The job object for one row."""
        return self.job_class(ctx, job_id, self.name, row)


def _replication_transitions(sm: SM, job: Job) -> None:
    from model.replication import add_transitions

    add_transitions(sm, job)


def _scan_transitions(sm: SM, job: Job) -> None:
    from model.scan import add_transitions

    add_transitions(sm, job)


BUILTIN_KINDS = (
    JobKind("replication", _replication_transitions, "max_job_workers", RepJob, "replication_job"),
    JobKind("scan", _scan_transitions, "scan_workers", ScanJob, "img_scan_job"),
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
        if kind.table != "job" and kind not in BUILTIN_KINDS:
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
