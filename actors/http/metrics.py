"""Prometheus metrics of one HTTP app: a registry of its own (several apps may live in
one process), read from the :class:`JobService` when scraped."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from loguru import logger
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from actors.service import JobService
from model.db.tables import NodeState
from model.errors import JobServiceError
from model.status import TERMINAL, Status

__all__ = ["ServiceMetrics"]

#: Buckets of the job duration histogram, in seconds.
DURATION_BUCKETS_S = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
#: Help texts of the replication counters (``jobservice_replication_<name>_total``).
_COUNTER_HELP = {
    "bytes_sent": "Blob bytes replication jobs wrote to targets (partial uploads included)",
    "blobs_sent": "Blobs uploaded whole to targets",
    "blobs_mounted": "Blobs linked from another repository of a target",
    "blobs_skipped": "Blobs already on a target",
    "manifests_pushed": "Manifests stored on targets",
    "tags_skipped": "Tags already on a target, or gone from the source",
    "manifests_deleted": "Manifests deleted by delete jobs",
}
#: Ended jobs remembered between two scrapes (the oldest are dropped beyond this).
_PENDING_OBSERVATIONS = 10_000
#: The values of ``jobservice_nodes{state}``: a node row's state, ``dead`` for a live
#: one whose beat is overdue.
_NODE_STATES = (NodeState.LIVE, "dead", NodeState.GONE, NodeState.STOPPED)


class ServiceMetrics:
    """The metrics of one service and its HTTP app, in :attr:`registry`.

    - ``jobservice_up``: 1 while the actor system runs.
    - ``jobservice_jobs{kind,status}``: jobs in the database.
    - ``jobservice_queue_depth{kind}``, ``jobservice_jobs_delayed{kind}``: jobs a worker
      could take now, and retrying jobs not yet due.
    - ``jobservice_workers{kind}``, ``jobservice_workers_busy{kind}``.
    - ``jobservice_job_duration_seconds{kind,status}``: from a job's creation to its end.
    - ``jobservice_replication_bytes_sent_total``: blob bytes replication jobs wrote to
      targets; and ``…_blobs_sent_total``, ``…_blobs_mounted_total``,
      ``…_blobs_skipped_total``, ``…_manifests_pushed_total``, ``…_tags_skipped_total``,
      ``…_manifests_deleted_total`` (``JobService.replication_counters``).
    - ``jobservice_http_requests_total{method,route,code}``.
    - ``jobservice_nodes{state}``: the nodes the database remembers, by state
      (``live``, ``dead`` — live but its beat overdue —, ``gone``, ``stopped``).
    - Per live node (its name in ``node``): ``jobservice_node_heartbeat_age_seconds``,
      and, as of its last beat, ``jobservice_node_workers{node,kind}`` and
      ``jobservice_node_workers_busy{node,kind}``.
    """

    def __init__(self, service: JobService) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        # Registered first: a scrape reads the service (and notes ended jobs' durations)
        # before it reads the histogram.
        self.registry.register(_ServiceCollector(self))
        self.durations = Histogram(
            "jobservice_job_duration_seconds",
            "Seconds from a job's creation to its end, by kind and final status",
            ["kind", "status"],
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.requests = Counter(
            "jobservice_http_requests",
            "HTTP requests answered, by method, route and status code",
            ["method", "route", "code"],
            registry=self.registry,
        )
        self._ended: collections.deque[tuple[str, int, str, float]] = collections.deque(
            maxlen=_PENDING_OBSERVATIONS
        )
        self._lock = threading.Lock()
        service.add_job_listener(self._job_ended)

    def _job_ended(self, kind: str, job_id: int, status: str) -> None:
        """Runs in a pool's thread: only notes the end; the scrape reads the row."""
        if status in TERMINAL:
            self._ended.append((kind, job_id, str(status), time.time()))

    def observe_ended(self) -> None:
        """Adds the jobs that ended since the last scrape to the duration histogram."""
        with self._lock:
            while self._ended:
                kind, job_id, status, ended = self._ended.popleft()
                try:
                    created: datetime = self.service.job(kind, job_id)["creation_time"]
                except JobServiceError:
                    continue
                self.durations.labels(kind, status).observe(max(ended - created.timestamp(), 0.0))


class _ServiceCollector(Collector):
    """Reads the service's stats at each scrape."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        service = self.metrics.service
        up = GaugeMetricFamily("jobservice_up", "1 while the actor system runs")
        healthy = service.healthy()
        up.add_metric([], 1.0 if healthy else 0.0)
        yield up
        if not healthy:
            return
        try:
            stats = service.stats()
            self.metrics.observe_ended()
        except JobServiceError as exc:
            logger.warning("metrics: cannot read the service's stats: {}", exc)
            return
        families = {
            "jobs": GaugeMetricFamily(
                "jobservice_jobs",
                "Jobs in the database by kind and status",
                labels=["kind", "status"],
            ),
            "queued": GaugeMetricFamily(
                "jobservice_queue_depth", "Jobs a worker could take now", labels=["kind"]
            ),
            "delayed": GaugeMetricFamily(
                "jobservice_jobs_delayed", "Retrying jobs not yet due", labels=["kind"]
            ),
            "size": GaugeMetricFamily("jobservice_workers", "Workers per pool", labels=["kind"]),
            "busy": GaugeMetricFamily(
                "jobservice_workers_busy", "Workers running a job", labels=["kind"]
            ),
        }
        for kind, info in stats.items():
            counts: dict[str, Any] = info["statuses"]
            for status in Status:
                families["jobs"].add_metric([kind, status.value], counts.get(status.value, 0))
            for name in ("queued", "delayed", "size", "busy"):
                families[name].add_metric([kind], info[name])
        yield from families.values()
        try:
            nodes = service.nodes()
        except JobServiceError as exc:
            logger.warning("metrics: cannot read the nodes: {}", exc)
        else:
            yield from _node_families(nodes)
        for name, value in service.replication_counters().items():
            counter = CounterMetricFamily(
                f"jobservice_replication_{name}", _COUNTER_HELP.get(name, name.replace("_", " "))
            )
            counter.add_metric([], float(value))
            yield counter


def _node_families(nodes: list[dict[str, Any]]) -> Iterator[Metric]:
    """The node gauges of :class:`ServiceMetrics` from :meth:`JobService.nodes` rows."""
    by_state = GaugeMetricFamily(
        "jobservice_nodes",
        "Nodes sharing the database by state (dead: live but its heartbeat overdue)",
        labels=["state"],
    )
    age = GaugeMetricFamily(
        "jobservice_node_heartbeat_age_seconds",
        "Seconds since a live node's last heartbeat, by the database's clock",
        labels=["node"],
    )
    size = GaugeMetricFamily(
        "jobservice_node_workers", "Workers per pool of a live node", labels=["node", "kind"]
    )
    busy = GaugeMetricFamily(
        "jobservice_node_workers_busy",
        "Workers of a live node running a job, at its last heartbeat",
        labels=["node", "kind"],
    )
    counts = dict.fromkeys(_NODE_STATES, 0)
    for node in nodes:
        state = "dead" if node["dead"] else str(node["state"])
        counts[state] = counts.get(state, 0) + 1
        if node["state"] != NodeState.LIVE:
            continue
        name = str(node["name"])
        age.add_metric([name], float(node["age_s"]))
        for kind, load in sorted((node["pools"] or {}).items()):
            size.add_metric([name, kind], float(load.get("size", 0)))
            busy.add_metric([name, kind], float(load.get("busy", 0)))
    for state, count in counts.items():
        by_state.add_metric([state], float(count))
    yield from (by_state, age, size, busy)
