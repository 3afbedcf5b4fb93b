"""``JobService``: the embedded API. Builds the actor tree from settings, resumes jobs
at start, offers submit / stop / status / wait / stats, and shuts down cleanly. The
HTTP API and the CLI are thin layers over it."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import pykka
from loguru import logger

from actors.base import JobListener, Runtime, ask
from actors.dispatcher import Dispatcher
from actors.handoff import HandoffSlots, submit_rows
from actors.health import DatabaseWatch
from actors.messages import (
    Drain,
    Drained,
    GetPools,
    Pools,
    PoolStats,
    PoolStatus,
    Release,
    Released,
    Schedule,
    StopJob,
    Stopping,
    Wake,
)
from actors.node import Membership
from model.crypto import SecretBox, service_key
from model.db import Store
from model.db.tables import ReplicationPolicy
from model.errors import ConfigError, InvalidRequest, NotFound, ServiceNotRunning, WaitTimeout
from model.joblog import JobLogSink
from model.jobs import JobContext
from model.kinds import JobKind, KindRegistry
from model.names import check_id
from model.operation import Operation
from model.replication import (
    RepositoryLister,
    replication_rows,
    replication_stats,
)
from model.scan import scan_row
from model.settings import Settings
from model.sm import RetryPolicy
from model.status import TERMINAL, Status

__all__ = ["JobService"]

#: Seconds any ask to an actor may take before the caller gives up.
_ASK_TIMEOUT_S = 10.0
#: Tries of a stop whose job keeps moving between pending, retrying and running.
_STOP_ROUNDS = 5
#: Params as stored: ``json.dumps(…, sort_keys=True)``, its encoder made once.
_PARAMS_JSON = json.JSONEncoder(sort_keys=True)
#: Longest wait between two reads of a job's status in :meth:`JobService.wait`; the
#: service's own jobs wake waiters at once, this bounds changes made elsewhere.
_WAIT_POLL_S = 0.5


class JobService:
    """The job service embedded in a Python program (also a context manager)."""

    def __init__(
        self,
        settings: Settings | None = None,
        kinds: Iterable[JobKind] = (),
        *,
        list_repositories: RepositoryLister | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.kinds = KindRegistry(kinds)
        self.retry_policy = RetryPolicy(
            self.settings.retry_delay, self.settings.retry_delay_max, self.settings.max_retries
        )
        self._list_repositories = list_repositories
        #: ``wait`` callers by (kind, job id); woken when a worker lets go of the job.
        self._waiters: dict[tuple[str, int], list[threading.Event]] = {}
        self._waiters_lock = threading.Lock()
        self._dispatcher: pykka.ActorRef[Any] | None = None
        self._pools: dict[str, pykka.ActorRef[Any]] = {}
        self._slots: dict[str, HandoffSlots] = {}
        self._ctx: JobContext | None = None
        self._node: Membership
        self._accepting = False
        self._listeners: list[JobListener] = []
        self._database = DatabaseWatch()

    # -- life --------------------------------------------------------------------------

    def start(self) -> JobService:
        """Opens the database, joins the nodes sharing it, builds the actors and
        resumes unfinished jobs.

        Jobs left ``running`` by a node that is dead (its beat older than
        ``node_timeout``, or its process on this machine gone) become ``pending``;
        a live node's jobs are left alone. Every pending, retrying (at its due time)
        and resumed job is scheduled again. Raises :class:`ConfigError` naming a
        setting that does not work.
        """
        if self._dispatcher is not None:
            raise ServiceNotRunning("the job service is already started")
        settings = self.settings
        for kind in self.kinds:
            kind.size(settings)
        try:
            settings.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                "log_dir", f"cannot create {settings.log_dir}: {exc.strerror}"
            ) from None
        store = Store(settings.database_url)
        try:
            store.create_all()
            store.remember_file()
            encrypted = store.count_encrypted_passwords()
        except Exception as exc:
            store.close()
            raise ConfigError("database_url", f"cannot open the database: {exc}") from exc
        store.analyze_unseen()  # claims need the job tables' planner statistics
        try:
            fmt = settings.password_format
            box = SecretBox(service_key(settings.key_path, encrypted, fmt), fmt)
        except BaseException:
            store.close()
            raise
        sink = JobLogSink()
        sink.install()
        self._ctx = JobContext(store, settings, box, sink)
        self._node = Membership(self._ctx, self.kinds)
        self._node.join()
        for kind in self.kinds:
            kind.open(self._ctx)
        self._dispatcher = Dispatcher.start(
            Runtime(self._ctx, self.kinds, self.retry_policy, self._job_ended, self._node)
        )
        pools = ask(self._dispatcher, GetPools(), Pools, _ASK_TIMEOUT_S)
        self._pools, self._slots = dict(pools.by_kind), dict(pools.slots)
        self._accepting = True
        for kind in self.kinds:
            self._dispatcher.tell(Schedule(kind.name))
        return self

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stops taking jobs, lets each running job reach its next transition and hands
        it back as ``pending``, stops every actor, and leaves the nodes (which are told,
        so that another node takes the jobs handed back at once)."""
        if self._dispatcher is None or self._ctx is None:
            return
        self._accepting = False
        deadline = time.monotonic() + timeout
        workers: list[pykka.ActorRef[Any]] = []
        for pool in self._pools.values():
            with contextlib.suppress(pykka.ActorDeadError, pykka.Timeout):
                workers += ask(pool, Drain(), Drained, _left(deadline)).workers
        releases = [w.ask(Release(), block=False) for w in workers if w.is_alive()]
        handed_back = []
        for future in releases:
            with contextlib.suppress(pykka.ActorDeadError, pykka.Timeout):
                released = future.get(timeout=_left(deadline))
                if isinstance(released, Released) and released.job_id is not None:
                    handed_back.append(released.job_id)
        if handed_back:
            logger.info("shutting down: {} running job(s) handed back", len(handed_back))
        self._dispatcher.stop(block=True, timeout=max(_left(deadline), 1.0))
        self._dispatcher = None
        self._node.leave(self._pools)
        self._pools, self._slots = {}, {}
        for kind in self.kinds:
            try:
                kind.close(self._ctx)
            except Exception as exc:
                logger.opt(exception=exc).error("{} kind: cannot close: {}", kind.name, exc)
        self._ctx.sink.remove()
        self._ctx.store.close()
        self._ctx = None
        with self._waiters_lock:
            for events in self._waiters.values():
                for event in events:
                    event.set()

    def __enter__(self) -> JobService:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown(self.settings.shutdown_timeout)

    @property
    def store(self) -> Store:
        """The service's database access (started services only)."""
        return self._context().store

    @property
    def box(self) -> SecretBox:
        """Encrypts and decrypts target passwords with the service's key."""
        return self._context().box

    def database_problem(self, *, probe: bool = False) -> str | None:
        """Why the database cannot take this service's writes now, or None (also when
        the service is not running: its calls say so themselves); see
        :class:`actors.health.DatabaseWatch`."""
        ctx = self._ctx
        return None if ctx is None else self._database.problem(ctx.store, probe=probe)

    def healthy(self) -> bool:
        """True while the dispatcher and every pool are alive."""
        dispatcher = self._dispatcher
        return (
            dispatcher is not None
            and dispatcher.is_alive()
            and all(pool.is_alive() for pool in self._pools.values())
        )

    # -- work --------------------------------------------------------------------------

    def replicate(
        self,
        policy_id: int,
        repository: str | None = None,
        tags: Iterable[str] = (),
        operation: str = Operation.TRANSFER,
    ) -> list[int]:
        """Queues replication jobs of ``policy_id``: one for ``repository`` or, with none,
        one per repository of the policy's project in the source registry. Returns their
        ids. Raises :class:`NotFound` for an unknown policy, :class:`InvalidRequest` for
        bad input; nothing is written for a rejected request."""
        ctx = self._context()
        rows = replication_rows(
            ctx.store,
            self.settings,
            policy_id,
            repository,
            tags,
            operation,
            self._list_repositories,
        )
        return self._queue("replication", rows)

    def scan(self, repository: str, tag: str, digest: str | None = None) -> int:
        """Queues a scan of ``repository:tag`` and returns its id."""
        (job_id,) = self._queue("scan", [scan_row(repository, tag, digest)])
        return job_id

    def submit(self, kind: str, params: Mapping[str, Any] | None = None) -> int:
        """Queues a job of a registered kind with JSON ``params``; returns its id."""
        (job_id,) = self._queue(kind, [self._checked_params(kind, params or {})])
        return job_id

    def _checked_params(self, kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
        self._context()
        job_kind = self.kinds[kind]
        if job_kind.scope is None:
            raise InvalidRequest("kind", f"{kind!r} jobs are queued with JobService.{kind}()")
        if type(params) is not dict and not isinstance(params, Mapping):
            raise InvalidRequest("params", "must be a JSON object")
        values = job_kind.check_params(params) if job_kind.check_params is not None else params
        try:
            text = _PARAMS_JSON.encode(values) if values else "{}"
        except (TypeError, ValueError) as exc:
            raise InvalidRequest("params", f"must be JSON: {exc}") from None
        return {"kind": kind, "params": text}  # stored as the JSON text it was checked as

    def submit_many(self, kind: str, params: Iterable[Mapping[str, Any]]) -> list[int]:
        """Queues many jobs of a registered kind in one transaction; returns their ids.
        Nothing is written when any ``params`` is refused."""
        rows = [self._checked_params(kind, values) for values in params]
        return self._queue(kind, rows)

    def _queue(self, kind: str, rows: list[dict[str, Any]]) -> list[int]:
        ctx = self._context()
        table, pool = self.kinds[kind].table, self._pools[kind]
        return submit_rows(ctx.store, table, kind, rows, pool, self._slots.get(kind))

    def wake(self, kinds: Iterable[str]) -> None:
        """Wakes the pools of ``kinds`` here (jobs were queued in the database by other
        means than this service's submit methods, e.g. :meth:`Store.queue`); a pool
        that cannot take them all wakes the other nodes."""
        for kind in kinds:
            try:
                self._pools[self.kinds[kind].name].tell(Wake(pass_on=True))
            except pykka.ActorDeadError as exc:
                logger.error("{} pool was not woken: {!r}", kind, exc)

    # -- control -----------------------------------------------------------------------

    def stop(self, kind: str, job_id: int) -> str:
        """Stops a job: a pending or retrying one at once, a running one at its next
        transition. Returns the status the job had when asked."""
        ctx = self._context()
        check_id(job_id, "job_id")
        job_kind = self.kinds[kind]
        status = ctx.store.status(job_kind.table, job_id)
        if not job_kind.owns(ctx.store.job(job_kind.table, job_id)):
            raise InvalidRequest("job_id", f"job {job_id} is not a {kind} job")
        asked = status
        # The job may move between the reads and the writes (claimed, handed back,
        # set retrying): each round stops it where it is now, until one lands.
        for _ in range(_STOP_ROUNDS):
            if ctx.store.stop_waiting(job_kind.table, id=job_id):
                job_kind.make_job(ctx, job_id).logger.info(
                    "state stopped (stop requested while {})", status
                )
                self._job_ended(kind, job_id, Status.STOPPED)
                return asked
            status = ctx.store.status(job_kind.table, job_id)
            if status in TERMINAL or (
                status == Status.RUNNING and self._stop_running(job_kind, job_id)
            ):
                return asked
            # Running on no worker: its pool has just written where it went (a retry,
            # say); the next round stops it there.
        return asked

    def _stop_running(self, kind: JobKind, job_id: int) -> bool:
        """Stops a running job: here, through its pool; on another node, by a request
        recorded on its row and sent to the nodes. False when it runs nowhere now."""
        ctx = self._context()
        node = ctx.store.job(kind.table, job_id).get("node_id")
        if node is not None and node != self._node.id:
            running_on = ctx.store.nodes.request_stop(kind.table, job_id)
            if running_on is None:
                return False
            ctx.store.nodes.notify([f"stop {kind.name} {job_id}"])
            return True
        # Asked, not told: once the pool answers, the stop sits in the worker's inbox
        # ahead of the job's next transition.
        try:
            return ask(self._pools[kind.name], StopJob(job_id), Stopping, _ASK_TIMEOUT_S).running
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            logger.error("cannot route stop of {} job {}: {!r}", kind.name, job_id, exc)
            return False

    def stop_where(self, kind: str, reason: str, /, **equal: Any) -> list[int]:
        """Stops every job of ``kind`` whose columns equal ``equal``: the pending and
        retrying ones become ``stopped`` at once (``reason`` in their logs), running ones
        get a stop request. Returns the ids it acted on; raises :class:`InvalidRequest`
        naming a column the kind's table does not have."""
        ctx = self._context()
        job_kind = self.kinds[kind]
        if job_kind.scope is not None:
            equal["kind"] = job_kind.scope
        stopped = ctx.store.stop_waiting(job_kind.table, **equal)
        for job_id in stopped:
            job_kind.make_job(ctx, job_id).logger.info("state stopped ({})", reason)
            self._job_ended(kind, job_id, Status.STOPPED)
        running = ctx.store.job_ids(job_kind.table, [Status.RUNNING], **equal)
        for job_id in running:
            self._stop_running(job_kind, job_id)
        return stopped + running

    def stop_policy(self, policy_id: int) -> list[int]:
        """The original's stop action: the policy's pending and retrying jobs become
        ``stopped``, running ones get a stop request. Returns the ids it acted on."""
        check_id(policy_id, "policy_id")
        self._context().store.get(ReplicationPolicy, policy_id)
        return self.stop_where("replication", "policy stopped", policy_id=policy_id)

    def status(self, kind: str, job_id: int) -> str:
        """The job's status; raises :class:`NotFound`."""
        check_id(job_id, "job_id")
        return self._context().store.status(self.kinds[kind].table, job_id)

    def wait(self, kind: str, job_id: int, timeout: float) -> str:
        """Blocks until the job holds a terminal status and returns it, with every line
        its log was given by then in the file; raises :class:`WaitTimeout` at the
        deadline."""
        table = self.kinds[kind].table
        deadline = time.monotonic() + timeout
        key = (kind, job_id)
        ended = threading.Event()
        with self._waiters_lock:
            self._waiters.setdefault(key, []).append(ended)
        try:
            while True:
                ctx = self._context()
                status = ctx.store.status(table, job_id)
                if status in TERMINAL:
                    ctx.sink.flush()
                    return status
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(kind, job_id, status, timeout)
                ended.wait(min(left, _WAIT_POLL_S))
                ended.clear()
        finally:
            with self._waiters_lock:
                events = self._waiters.get(key, [])
                if ended in events:
                    events.remove(ended)
                if not events:
                    self._waiters.pop(key, None)

    def job(self, kind: str, job_id: int) -> dict[str, Any]:
        """The stored row of one job; raises :class:`NotFound` (also for a job of
        another kind) and :class:`InvalidRequest` for a bad id."""
        check_id(job_id, "job_id")
        job_kind = self.kinds[kind]
        row = self._context().store.job(job_kind.table, job_id)
        if not job_kind.owns(row):
            raise NotFound(f"{kind} job", job_id)
        return row

    def log_path(self, kind: str, job_id: int) -> str:
        """Where the log file of job ``job_id`` of ``kind`` is, whether or not it exists
        (the original's layout, see :func:`model.joblog.job_log_path`); every line
        logged before the call is in it."""
        check_id(job_id, "job_id")
        ctx = self._context()
        ctx.sink.flush()
        return self.kinds[kind].make_job(ctx, job_id).log_path

    def add_job_listener(self, listener: JobListener) -> None:
        """Calls ``listener(kind, job_id, status)`` whenever a worker lets go of a job
        (``status`` is the one it left the job in) or a waiting job is stopped, once
        that status is in the database. It runs in the thread that wrote it: a
        worker's, a pool's, the caller's of :meth:`stop`, or (SQLite, whose writes of
        one process commit together) any thread whose own write committed it with
        its own. It must be quick; what it raises is logged."""
        self._listeners.append(listener)

    def replication_counters(self) -> dict[str, int]:
        """Counters of this service's replication jobs since it started, by name
        (``bytes_sent``, ``blobs_sent``, …; see :data:`model.replication.STAT_NAMES`)."""
        return replication_stats(self._context()).snapshot()

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per pool: size, busy workers, queued jobs (due now) and delayed ones
        (retrying, not yet due), jobs whose last status the database refused (written
        again until it lands), whether its claims fail (it claims again until they
        work), and the number of its jobs per status."""
        ctx = self._context()
        result: dict[str, dict[str, Any]] = {}
        for kind in self.kinds:
            pool = ask(self._pools[kind.name], PoolStats(), PoolStatus, _ASK_TIMEOUT_S)
            queued, delayed = ctx.store.queue_counts(kind.table, kind.scope)
            result[kind.name] = {
                "size": pool.size,
                "busy": pool.busy,
                "running": list(pool.jobs),
                "queued": queued,
                "delayed": delayed,
                "unrecorded": pool.unrecorded,
                "claim_failing": pool.claim_failing,
                "statuses": ctx.store.status_counts(kind.table, kind.scope),
            }
        return result

    @property
    def node_name(self) -> str:
        """This service's name among the nodes sharing its database."""
        return self._node.name

    def nodes(self) -> list[dict[str, Any]]:
        """The nodes sharing the database, newest first (:meth:`model.db.nodes.Nodes.rows`):
        name, state (``live``, ``gone``, ``stopped``), beat age, load per kind, and
        whether a live one is overdue (``dead``); ``self`` marks this one."""
        rows = self._context().store.nodes.rows(self.settings.node_timeout)
        for row in rows:
            row["self"] = row["id"] == self._node.id
        return rows

    # -- plumbing ----------------------------------------------------------------------

    def _context(self) -> JobContext:
        if self._ctx is None or not self._accepting:
            raise ServiceNotRunning("the job service is not running (call start())")
        return self._ctx

    def _job_ended(self, kind: str, job_id: int, status: str) -> None:
        """Called from pool threads when a worker lets go of a job: wakes its waiters."""
        with self._waiters_lock:
            for event in self._waiters.get((kind, job_id), ()):
                event.set()
        for listener in self._listeners:
            try:
                listener(kind, job_id, status)
            except Exception as exc:
                logger.opt(exception=exc).error("job listener {!r} failed: {}", listener, exc)


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.01)
