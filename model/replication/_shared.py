"""What the replication jobs of one service share: counters for metrics, where blobs
are known to sit on each target (for cross-repository mounts), registry clients, and
the job runs that hold upload sessions (released when the service shuts down)."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from loguru import logger

from model.jobs import JobContext
from model.net import ssl_context
from model.registry import RegistryClient

__all__ = [
    "STAT_NAMES",
    "BlobLocations",
    "ClientPool",
    "OpenRuns",
    "ReplicationShared",
    "ReplicationStats",
    "close_shared",
    "open_shared",
    "replication_stats",
]

#: The counters of :class:`ReplicationStats`, each a Prometheus counter candidate
#: (``jobservice_replication_<name>_total``).
STAT_NAMES = (
    "bytes_sent",  #: blob bytes written to targets (partial uploads included)
    "blobs_sent",  #: blobs uploaded whole
    "blobs_mounted",  #: blobs linked from another repository of the target
    "blobs_skipped",  #: blobs already on the target
    "manifests_pushed",  #: manifests (children of an index included) stored on targets
    "tags_skipped",  #: tags already on the target, or gone from the source
    "manifests_deleted",  #: manifests deleted by delete jobs
)
#: Blob locations remembered per service (the most recent ones).
BLOB_LOCATIONS_CAPACITY = 100_000
#: Repositories remembered per blob and target.
REPOSITORIES_PER_BLOB = 4
#: Registry clients a service keeps open while no job uses them.
IDLE_CLIENTS_KEPT = 8


class ReplicationStats:
    """Counters of a service's replication jobs since it started; they only grow, so a
    metrics exporter can publish them as counters. Thread-safe (every worker adds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(STAT_NAMES, 0)

    def add(self, name: str, amount: int = 1) -> None:
        """Adds ``amount`` to the counter ``name`` (one of :data:`STAT_NAMES`)."""
        if name not in self._counts:
            raise KeyError(f"unknown replication counter {name!r}")
        with self._lock:
            self._counts[name] += amount

    @property
    def bytes_sent(self) -> int:
        """Blob bytes written to targets so far."""
        return self._counts["bytes_sent"]

    def snapshot(self) -> dict[str, int]:
        """Every counter by name, read at one instant."""
        with self._lock:
            return dict(self._counts)


class BlobLocations:
    """Repositories of a target registry a blob is known to sit in, learnt from the
    blobs this service's jobs found, mounted or sent there. A hint for a
    cross-repository mount, never proof: a mount that fails falls back to an upload.
    Bounded (least recently learnt forgotten first); thread-safe."""

    def __init__(self, capacity: int = BLOB_LOCATIONS_CAPACITY) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._where: OrderedDict[tuple[str, str], tuple[str, ...]] = OrderedDict()

    def remember(self, registry: str, digest: str, repository: str) -> None:
        """Records that ``registry`` holds ``digest`` in ``repository``."""
        key = (registry, digest)
        with self._lock:
            known = tuple(r for r in self._where.pop(key, ()) if r != repository)
            self._where[key] = (repository, *known)[:REPOSITORIES_PER_BLOB]
            while len(self._where) > self._capacity:
                self._where.popitem(last=False)

    def forget(self, registry: str, digest: str, repository: str) -> None:
        """Drops a location that turned out wrong (a mount from it failed)."""
        key = (registry, digest)
        with self._lock:
            known = tuple(r for r in self._where.get(key, ()) if r != repository)
            if known:
                self._where[key] = known
            else:
                self._where.pop(key, None)

    def where(self, registry: str, digest: str, *, besides: str) -> str | None:
        """A repository of ``registry`` other than ``besides`` known to hold ``digest``."""
        with self._lock:
            return next((r for r in self._where.get((registry, digest), ()) if r != besides), None)


#: What tells two clients apart: URL, user, a hash of the password, ``insecure``.
ClientKey = tuple[str, str, str, bool]


class ClientPool:
    """Registry clients shared by a service's jobs, one per registry and credentials, so
    that jobs reuse connections and tokens (and a job does not pay for a new TLS
    context). :meth:`acquire` and :meth:`release` count users; at most ``idle_kept``
    clients no job uses stay open, the least recently used beyond that are closed.
    Thread-safe."""

    def __init__(self, idle_kept: int = IDLE_CLIENTS_KEPT) -> None:
        self._idle_kept = idle_kept
        self._lock = threading.Lock()
        self._clients: OrderedDict[ClientKey, tuple[RegistryClient, int]] = OrderedDict()
        # The clients' one TLS context, built with the pool (at the service's start)
        # rather than by the first job: loading the CA bundle takes about 30 ms.
        ssl_context(True)

    @staticmethod
    def key(url: str, username: str | None, password: str | None, insecure: bool) -> ClientKey:
        digest = hashlib.sha256((password or "").encode()).hexdigest()
        return (url, username or "", digest, insecure)

    def acquire(self, key: ClientKey, make: Callable[[], RegistryClient]) -> RegistryClient:
        """The client for ``key`` (made with ``make`` when there is none); give it back
        with :meth:`release`."""
        with self._lock:
            entry = self._clients.pop(key, None)
            if entry is not None:
                client, users = entry
                self._clients[key] = (client, users + 1)
                return client
        client = make()
        with self._lock:
            entry = self._clients.pop(key, None)
            if entry is not None:  # made meanwhile by another job: use that one
                spare, (client, users) = client, entry
                self._clients[key] = (client, users + 1)
            else:
                spare = None
                self._clients[key] = (client, 1)
        if spare is not None:
            spare.close()
        return client

    def release(self, client: RegistryClient) -> None:
        """Gives ``client`` back; closes idle clients beyond the number kept."""
        closing: list[RegistryClient] = []
        with self._lock:
            for key, (known, users) in self._clients.items():
                if known is client:
                    self._clients[key] = (known, max(users - 1, 0))
                    break
            idle = [k for k, (_, users) in self._clients.items() if users == 0]
            for key in idle[: max(len(idle) - self._idle_kept, 0)]:
                closing.append(self._clients.pop(key)[0])
        for idle_client in closing:
            idle_client.close()

    def close(self) -> None:
        """Closes every client (for a service that stops)."""
        with self._lock:
            clients = [c for c, _ in self._clients.values()]
            self._clients.clear()
        for client in clients:
            client.close()


class Abandonable(Protocol):
    """A job run a service shutting down can release."""

    def abandon(self) -> bool:
        """Releases the run if its worker let go of it; returns whether it did."""
        ...


class OpenRuns:
    """The job runs of a service that hold resources across transitions (upload
    sessions, clients), each from its start until it releases them, so that a service
    shutting down can release the ones its workers handed back. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: set[Abandonable] = set()

    def add(self, run: Abandonable) -> None:
        with self._lock:
            self._runs.add(run)

    def discard(self, run: Abandonable) -> None:
        with self._lock:
            self._runs.discard(run)

    def take_all(self) -> list[Abandonable]:
        """Every open run, forgotten here."""
        with self._lock:
            runs, self._runs = list(self._runs), set()
        return runs


@dataclass
class ReplicationShared:
    """The replication state one service's jobs share."""

    stats: ReplicationStats = field(default_factory=ReplicationStats)
    locations: BlobLocations = field(default_factory=BlobLocations)
    clients: ClientPool = field(default_factory=ClientPool)
    runs: OpenRuns = field(default_factory=OpenRuns)


#: The key of a service's :class:`ReplicationShared` in ``JobContext.resources``.
RESOURCE_KEY = "replication"


def open_shared(ctx: JobContext) -> ReplicationShared:
    """The replication state the jobs of the service whose context is ``ctx`` share, in
    ``ctx.resources``: attached by the first call, the replication kind's ``open`` hook
    at the service's start (or a job's, for a context no service opened)."""
    return ctx.resource(RESOURCE_KEY, ReplicationShared)


def close_shared(ctx: JobContext) -> None:
    """Releases the job runs the workers of the service whose jobs get ``ctx`` handed
    back (their upload sessions are cancelled), closes the registry clients kept for it
    and detaches its shared state (the replication kind's ``close`` hook, called at the
    service's shutdown once the workers have handed their jobs back); safe when there
    is none."""
    shared = ctx.resources.pop(RESOURCE_KEY, None)
    if shared is None:
        return
    for run in shared.runs.take_all():
        try:
            run.abandon()
        except Exception as exc:
            logger.opt(exception=exc).error("releasing a replication run failed: {}", exc)
    shared.clients.close()


def replication_stats(ctx: JobContext) -> ReplicationStats:
    """The replication counters of the service whose jobs get ``ctx``; see
    :data:`STAT_NAMES`. ``JobService`` can export ``replication_stats(ctx).snapshot()``."""
    return open_shared(ctx).stats
