"""Jobs as the state machine sees them: ``RepJob``, ``ScanJob`` and ``KindJob`` (a job of a
kind an embedding application registered), all over one stored-row base."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from model.crypto import SecretBox
from model.db import Store
from model.db.tables import utcnow
from model.errors import NotFound
from model.joblog import JobLogSink, job_log_path, job_logger
from model.settings import Settings
from model.status import TERMINAL, Status

if TYPE_CHECKING:
    from loguru import Logger

    from model.db.tables import Project, ReplicationPolicy, ReplicationTarget

__all__ = [
    "JobContext",
    "KindJob",
    "LastWrite",
    "RepJob",
    "RepJobParams",
    "ScanJob",
    "ScanJobParams",
    "StoredJob",
]

_R = TypeVar("_R")


@dataclass(frozen=True)
class JobContext:
    """What every job of one service shares: the store, the settings, the secret box and
    the log sink."""

    store: Store
    settings: Settings
    box: SecretBox
    sink: JobLogSink
    #: Each kind's shared resources by kind name, opened by ``JobKind.open`` at the
    #: service's start and closed by ``JobKind.close`` at its shutdown.
    resources: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def log_dir(self) -> str:
        """The base folder of job logs."""
        return str(self.settings.log_dir)

    def resource(self, key: str, make: Callable[[], _R]) -> _R:
        """The shared resource ``key`` of :attr:`resources`, made with ``make`` and
        attached by the first call (a kind's ``open`` hook, or a job's for a context
        no service opened)."""
        found = self.resources.get(key)
        if found is None:
            found = self.resources.setdefault(key, make())
        return cast(_R, found)


@dataclass(frozen=True)
class LastWrite:
    """The last status change of a job's run, which its worker hands to its pool to
    write: a terminal status, or ``retrying`` with its due time (``count_attempt``:
    the retry counts against ``max_retries``), or ``pending`` (handed back)."""

    status: str
    due: datetime | None = None
    count_attempt: bool = False


class StoredJob:
    """A job whose row lives in ``table``. Subclasses load their parameters in ``init``.

    ``row`` is the row as claimed, when the caller has it (saves a read).
    """

    table: str = "job"
    log_subdir: str = ""

    def __init__(
        self, ctx: JobContext, job_id: int, kind: str, row: Mapping[str, Any] | None = None
    ) -> None:
        self.ctx = ctx
        self._id = job_id
        self._kind = kind
        self._row: Mapping[str, Any] | None = row
        self._log_path = job_log_path(self.log_base(ctx, kind), job_id)
        self._logger: Logger | None = None  # bound at first use: most jobs log only states
        self.status: str = str(row["status"]) if row is not None else ""
        self._secrets: tuple[str, ...] = ()
        #: The run's last status change, entered and not written yet: the worker hands
        #: it to its pool, which writes it (see :meth:`update_status`).
        self.last_write: LastWrite | None = None

    @classmethod
    def log_base(cls, ctx: JobContext, kind: str) -> str:
        """The folder under which this class's job logs are laid out."""
        return os.path.join(ctx.log_dir, cls.log_subdir) if cls.log_subdir else ctx.log_dir

    @property
    def id(self) -> int:
        return self._id

    @property
    def type(self) -> str:
        return self._kind

    @property
    def log_path(self) -> str:
        return self._log_path

    @property
    def logger(self) -> Logger:
        if self._logger is None:
            self._logger = job_logger(
                self.ctx.sink,
                self._log_path,
                secrets=self._secrets,
                job_id=self._id,
                job_type=self._kind,
            )
        return self._logger

    @property
    def attempts(self) -> int:
        """Retries taken so far."""
        return int(self.row["attempts"])

    @property
    def row(self) -> Mapping[str, Any]:
        """The job's row as last read."""
        if self._row is None:
            self._row = self.ctx.store.job(self.table, self._id)
        return self._row

    def log_state(self, state: str, previous: str) -> None:
        """Writes ``state <state> (from <previous>)`` to the job's log (straight to the
        file: a line per transition is the hot path of every job)."""
        self.ctx.sink.write_line(
            self._log_path, "INFO", f"state {state} (from {previous})", self._secrets
        )

    def update_status(self, status: str) -> None:
        """Sets the job's status: ``running`` it holds already (its claim set it) is not
        written again; a terminal status, the run's last change, is kept in
        :attr:`last_write` for the worker's pool to write (the machine holds at a
        terminal status); any other is one guarded UPDATE.

        The pool writes a run's end in the thread that claims jobs, and again until it
        lands when the database fails: a job's three writes (queued, claimed, ended)
        come from two threads, not three."""
        if status == self.status == Status.RUNNING:
            return
        if status in TERMINAL:
            self.status = status
            self.last_write = LastWrite(status)
            return
        self.ctx.store.set_status(self.table, self._id, status)
        self.status = status

    def get_status(self) -> str:
        """The status in the database."""
        self.status = self.ctx.store.status(self.table, self._id)
        return self.status

    def schedule_retry(self, delay_s: float, count_attempt: bool = True) -> datetime:
        """Sets the job ``retrying``, due in ``delay_s`` seconds (one more attempt counted
        when ``count_attempt``); returns the due time. The change, the run's last, is
        kept in :attr:`last_write` for the worker's pool to write."""
        due = utcnow() + timedelta(seconds=delay_s)
        self.last_write = LastWrite(Status.RETRYING, due, count_attempt)
        self.status = Status.RETRYING
        return due

    def init(self) -> None:
        """Loads the job's row, unless it came with the claim that just read it; raises
        :class:`NotFound` for an unknown id."""
        if self._row is None:
            self._row = self.ctx.store.job(self.table, self._id)
        self.status = str(self._row["status"])

    def secret(self, value: str) -> None:
        """Registers ``value`` as a secret: the job's log shows it as ``***``."""
        if value:
            self._secrets = (*self._secrets, value)
            if self._logger is not None:
                self._logger = self._logger.bind(secrets=self._secrets)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self._id}, type={self._kind!r})"


@dataclass(frozen=True)
class RepJobParams:
    """What a replication job needs (the original's ``RepJobParm``)."""

    local_registry_url: str
    target_url: str
    target_username: str
    target_password: str
    repository: str
    tags: tuple[str, ...]
    operation: str
    insecure: bool

    def __repr__(self) -> str:
        return (
            f"RepJobParams(repository={self.repository!r}, operation={self.operation!r}, "
            f"tags={self.tags!r}, target_url={self.target_url!r}, password=***)"
        )


class RepJob(StoredJob):
    """A replication job (the original's ``RepJob``)."""

    table = "replication_job"

    def __init__(
        self,
        ctx: JobContext,
        job_id: int,
        kind: str = "replication",
        row: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(ctx, job_id, kind, row)
        self.params: RepJobParams | None = None
        self.policy: ReplicationPolicy | None = None
        self.target: ReplicationTarget | None = None
        self.project: Project | None = None

    def init(self) -> None:
        """Loads the job, its policy and target, and decrypts the target's password.

        Raises :class:`NotFound` naming the missing job, policy or target."""
        super().init()
        row = self.row
        self.policy, self.target, self.project = self.ctx.store.policy_with_target(
            int(row["policy_id"])
        )
        password = self.ctx.box.decrypt(self.target.password) if self.target.password else ""
        self.secret(password)
        self.params = RepJobParams(
            local_registry_url=self.ctx.settings.registry_url,
            target_url=self.target.url,
            target_username=self.target.username,
            target_password=password,
            repository=str(row["repository"]),
            tags=tuple(row["tags"]),
            operation=str(row["operation"]),
            insecure=self.target.insecure,
        )


@dataclass(frozen=True)
class ScanJobParams:
    """What a scan job needs (the original's ``ScanJobParm``)."""

    repository: str
    tag: str
    digest: str


class ScanJob(StoredJob):
    """An image scan job (the original's ``ScanJob``); its log lives under ``scan_job/``."""

    table = "img_scan_job"
    log_subdir = "scan_job"

    def __init__(
        self, ctx: JobContext, job_id: int, kind: str = "scan", row: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(ctx, job_id, kind, row)
        self.params: ScanJobParams | None = None

    def init(self) -> None:
        """Loads the image to scan; raises :class:`NotFound` for an unknown id."""
        super().init()
        row = self.row
        self.params = ScanJobParams(
            str(row["repository"]), str(row["tag"]), str(row["digest"] or "")
        )


class KindJob(StoredJob):
    """A job of a kind registered by an embedding application; ``params`` is its JSON."""

    table = "job"

    def __init__(
        self, ctx: JobContext, job_id: int, kind: str, row: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(ctx, job_id, kind, row)
        self.params: dict[str, Any] = dict(row["params"]) if row is not None else {}

    @classmethod
    def log_base(cls, ctx: JobContext, kind: str) -> str:
        """Logs of registered kinds live under ``<log_dir>/<kind>/``."""
        return os.path.join(ctx.log_dir, kind)

    def init(self) -> None:
        """Loads the job's parameters; raises :class:`NotFound` for an unknown id or a job
        of another kind."""
        super().init()
        if self.row["kind"] != self._kind:
            raise NotFound(f"{self._kind} job", self._id)
        self.params = dict(self.row["params"])
