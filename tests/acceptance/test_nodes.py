"""Several nodes on one PostgreSQL database as one job service: ``jobservice serve`` and
``jobservice worker`` subprocesses sharing a real PostgreSQL, running the kinds of
``node_kinds`` (each job records its start and end in the database, with the node's
process id)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from faultproxy import Fault, FaultProxy
from node_kinds import runs_table
from postgres import PostgresCluster
from registries import ImageBuilder, RegistryServer, free_port, push_image, skopeo_digest
from waiting import wait_until

from model.db import Store, migrations
from model.db.tables import Project, ReplicationPolicy, ReplicationTarget
from model.status import Status

SECRET = "nodes-ui-secret"
JOBSERVICE = Path(sys.executable).with_name("jobservice")
HERE = Path(__file__).resolve().parent
#: Settings of every node: beats and polls fast, so a dead node is found in seconds.
HEARTBEAT_S, NODE_TIMEOUT_S, POLL_S = 0.5, 3.0, 0.5
START_TIMEOUT_S = 30.0


class NodeProcess:
    """``jobservice serve`` (with ``port``) or ``jobservice worker`` in a subprocess."""

    def __init__(self, root: Path, url: str, name: str, command: str = "worker") -> None:
        self.name = name
        self.command = command
        self.log_path = root / f"{name}.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("JOBSERVICE_", "UI_"))},
            "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)]),
            "JOBSERVICE_DATABASE_URL": url,
            "JOBSERVICE_LOG_DIR": str(root / "logs" / name),
            "JOBSERVICE_KEY_PATH": str(root / "jobservice.key"),
            "JOBSERVICE_UI_SECRET": SECRET,
            "JOBSERVICE_LISTEN_PORT": str(self.port),
            "JOBSERVICE_NODE_NAME": name,
            "JOBSERVICE_HEARTBEAT_INTERVAL": str(HEARTBEAT_S),
            "JOBSERVICE_NODE_TIMEOUT": str(NODE_TIMEOUT_S),
            "JOBSERVICE_POLL_INTERVAL": str(POLL_S),
            "JOBSERVICE_SCAN_WORKERS": "2",
            "JOBSERVICE_SHUTDOWN_TIMEOUT": "5",
            "JOBSERVICE_RETRY_DELAY": "2",
            "JOBSERVICE_RETRY_DELAY_MAX": "2",
            "JOBSERVICE_KIND_MODULES": json.dumps(["node_kinds:kinds"]),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, cookies={"secret": SECRET}, timeout=10)

    def start(self, store: Store) -> NodeProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(JOBSERVICE), self.command],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(lambda: self._live(store), timeout=START_TIMEOUT_S)
        return self

    def _live(self, store: Store) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.process.returncode}: {self.log()}")
        if not any(n["name"] == self.name and n["state"] == "live" for n in store.nodes.rows(60)):
            return False
        if self.command != "serve":
            return True
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def prepare(url: str) -> str:
    """The schema, and the table the test kinds record their runs in."""
    migrations.upgrade(url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(runs_table(url))
    engine.dispose()
    return url


@pytest.fixture
def cluster_url(postgres: PostgresCluster) -> str:
    return prepare(postgres.new_database())


@pytest.fixture
def store(cluster_url: str) -> Iterator[Store]:
    """The test's own view of the database: it submits (notifying the nodes) and reads."""
    store = Store(cluster_url)
    store.notify_others = True
    yield store
    store.close()


@pytest.fixture
def nodes(tmp_path: Path, cluster_url: str, store: Store) -> Iterator[Callable[..., NodeProcess]]:
    started: list[NodeProcess] = []

    def start(name: str, command: str = "worker", **env: str) -> NodeProcess:
        node = NodeProcess(tmp_path, cluster_url, name, command)
        node.env.update(env)
        started.append(node.start(store))
        return node

    yield start
    for node in started:
        if node.alive():
            node.kill()


def submit(store: Store, kind: str, count: int, **params: Any) -> list[int]:
    return store.insert_jobs("job", [{"kind": kind, "params": params}] * count, wake=kind)


def runs(store: Store, event: str) -> list[tuple[int, int]]:
    """(job id, pid) of every recorded ``event``."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT job_id, pid FROM runs WHERE event = :event ORDER BY id"),
            {"event": event},
        )
        return [(int(job), int(pid)) for job, pid in rows]


def logged(folder: Path, line: str) -> bool:
    """Whether a job log under ``folder`` holds ``line``."""
    return any(line in path.read_text() for path in folder.rglob("*.log"))


def beat_since(store: Store, node: str, *, joined: str) -> bool:
    """Whether node ``node`` beat since node ``joined`` joined."""
    rows = {row["name"]: row for row in store.nodes.rows(60)}
    return rows[node]["heartbeat"] > rows[joined]["started"]


def statuses(store: Store, ids: list[int]) -> Counter[str]:
    return Counter(store.status("job", job_id) for job_id in ids)


def all_finished(store: Store, ids: list[int]) -> bool:
    return statuses(store, ids) == Counter({Status.FINISHED.value: len(ids)})


def running_on(store: Store, ids: list[int]) -> dict[int, int | None]:
    """The node id of each running job of ``ids``."""
    found = {}
    for job_id in ids:
        row = store.job("job", job_id)
        if row["status"] == Status.RUNNING:
            found[job_id] = row["node_id"]
    return found


# -- many nodes, one queue -------------------------------------------------------------------


def test_three_nodes_run_every_job_exactly_once_and_each_runs_some(
    nodes: Callable[..., NodeProcess], store: Store
) -> None:
    a = nodes("a", "serve")
    b = nodes("b")
    c = nodes("c")
    ids = submit(store, "counted", 300, ms=10)

    wait_until(lambda: all_finished(store, ids), timeout=120)

    ends = runs(store, "end")
    assert sorted(job for job, _ in ends) == sorted(ids)  # each job ran to its end once
    per_node = Counter(pid for _, pid in ends)
    assert set(per_node) == {a.pid, b.pid, c.pid}, per_node


def test_work_queued_outside_the_nodes_goes_to_one_node_until_its_pool_is_full(
    nodes: Callable[..., NodeProcess], store: Store
) -> None:
    # Polls a minute apart: here only notifications bring a node work.
    a = nodes("a", JOBSERVICE_POLL_INTERVAL="60")
    b = nodes("b", JOBSERVICE_POLL_INTERVAL="60")
    # A node learns of the others at its beats: a wakes nobody until it beat after b joined.
    wait_until(lambda: beat_since(store, "a", joined="b"), timeout=30)
    one_by_one = []
    for _ in range(10):
        (job,) = submit(store, "counted", 1, ms=1)
        wait_until(lambda job=job: all_finished(store, [job]), timeout=30)
        one_by_one.append(job)

    ran_on = dict(runs(store, "end"))
    assert len({ran_on[job] for job in one_by_one}) == 1  # one node took every job
    # Four at once: that node's pool of 2 takes two, and wakes the other for the rest.
    batch = submit(store, "counted", 4, ms=300)
    wait_until(lambda: all_finished(store, batch), timeout=30)

    ran_on = dict(runs(store, "end"))
    assert {ran_on[job] for job in batch} == {a.pid, b.pid}
    # Two long jobs keep that node's pool busy: the next job goes on to the other node.
    target = ran_on[one_by_one[0]]
    long_jobs = [submit(store, "counted", 1, ms=5000)[0] for _ in range(2)]
    wait_until(lambda: len(running_on(store, long_jobs)) == 2, timeout=30)
    (job,) = submit(store, "counted", 1, ms=1)
    wait_until(lambda: all_finished(store, [job]), timeout=30)

    assert dict(runs(store, "end"))[job] != target
    assert len(running_on(store, long_jobs)) == 2  # it did not wait for them
    assert {pid for job, pid in runs(store, "start") if job in long_jobs} == {target}


def test_a_node_that_starts_changes_none_of_the_running_jobs(
    nodes: Callable[..., NodeProcess], store: Store, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    nodes("a")
    nodes("b")
    ids = submit(store, "held", 4, gate=str(gate))
    wait_until(lambda: len(running_on(store, ids)) == 4, timeout=30)
    before = running_on(store, ids)
    assert len(set(before.values())) == 2  # both nodes run some

    c = nodes("c")
    # The newcomer has joined, beaten and looked for dead nodes (twice) meanwhile.
    wait_until(lambda: _beats_of(store, "c") >= 2, timeout=30)
    assert running_on(store, ids) == before
    assert c.alive()

    gate.touch()
    wait_until(lambda: all_finished(store, ids), timeout=30)
    assert sorted(job for job, _ in runs(store, "start")) == sorted(ids)


def test_two_processes_on_one_sqlite_file_run_every_job_exactly_once(tmp_path: Path) -> None:
    url = prepare(f"sqlite:///{tmp_path}/jobservice.db")
    store = Store(url)
    started = []
    try:
        started = [
            NodeProcess(tmp_path, url, "a", "serve").start(store),
            NodeProcess(tmp_path, url, "b").start(store),
        ]
        # 1.5 s of work for one node alone: both nodes poll within 0.5 s.
        ids = submit(store, "counted", 100, ms=30)

        # No notifications on SQLite: the nodes find the jobs by their polls.
        wait_until(lambda: all_finished(store, ids), timeout=60)
        ends = runs(store, "end")
        assert sorted(job for job, _ in ends) == sorted(ids)
        assert {pid for _, pid in ends} == {node.pid for node in started}
    finally:
        for node in started:
            node.kill()
        store.close()


def _beats_of(store: Store, name: str) -> float:
    """How many beats the node ``name`` has made since it started (roughly)."""
    (row,) = [n for n in store.nodes.rows(60) if n["name"] == name]
    return (row["heartbeat"] - row["started"]).total_seconds() / HEARTBEAT_S


# -- a node dies -------------------------------------------------------------------------------


def test_the_jobs_of_a_killed_node_are_finished_by_the_others_within_the_timeout(
    nodes: Callable[..., NodeProcess], store: Store, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    a = nodes("a")
    b = nodes("b")
    ids = submit(store, "held", 4, gate=str(gate))
    wait_until(lambda: len(running_on(store, ids)) == 4, timeout=30)
    b_node = next(n["id"] for n in store.nodes.rows(60) if n["name"] == "b")
    on_b = [job for job, node in running_on(store, ids).items() if node == b_node]
    assert on_b

    b.kill()
    killed = time.monotonic()
    gate.touch()
    wait_until(lambda: all_finished(store, ids), timeout=NODE_TIMEOUT_S + 5)
    took = time.monotonic() - killed

    ends = runs(store, "end")
    assert sorted(job for job, _ in ends) == sorted(ids)  # none lost, none ended twice
    assert {pid for job, pid in ends if job in on_b} == {a.pid}
    print(f"killed node's {len(on_b)} jobs finished by the other {took:.1f} s after the kill")
    states = {n["name"]: n["state"] for n in store.nodes.rows(60)}
    assert states["b"] == "gone"
    # Job logs are written by the node's log thread, after the database's end at times.
    wait_until(
        lambda: logged(
            tmp_path / "logs" / "a", "node b is gone: job handed back as pending by node a"
        ),
        timeout=10,
    )


def test_a_retry_whose_node_died_runs_on_another_node_at_its_due_time(
    nodes: Callable[..., NodeProcess], store: Store
) -> None:
    b = nodes("b")
    (job,) = submit(store, "flaky", 1, fail_times=1)
    wait_until(lambda: store.status("job", job) == Status.RETRYING, timeout=30)
    b.kill()
    a = nodes("a")

    wait_until(lambda: store.status("job", job) == Status.FINISHED, timeout=30)
    assert runs(store, "fail") == [(job, b.pid)]
    assert runs(store, "end") == [(job, a.pid)]


# -- stops and shutdowns ---------------------------------------------------------------------


def test_a_stop_sent_to_one_node_stops_the_job_running_on_another_within_a_second(
    nodes: Callable[..., NodeProcess], store: Store, tmp_path: Path
) -> None:
    a = nodes("a", "serve")
    b = nodes("b")
    a_node = next(n["id"] for n in store.nodes.rows(60) if n["name"] == "a")
    # Only b has free workers for it: a's are all busy.
    ids = submit(store, "held", 2, gate=str(tmp_path / "never"))
    wait_until(lambda: len(running_on(store, ids)) == 2, timeout=30)
    on_b = [job for job, node in running_on(store, ids).items() if node != a_node]
    if not on_b:
        more = submit(store, "held", 2, gate=str(tmp_path / "never"))
        wait_until(lambda: len(running_on(store, more)) == 2, timeout=30)
        on_b = [job for job, node in running_on(store, more).items() if node != a_node]
    job = on_b[0]

    asked = time.monotonic()
    answer = a.http.post(f"/api/jobs/held/{job}/stop")
    assert answer.status_code == 200, answer.text
    wait_until(lambda: store.status("job", job) == Status.STOPPED, timeout=5)
    took = time.monotonic() - asked
    print(f"stop across nodes: {took * 1000:.0f} ms")
    assert took < 1.0, f"the stop took {took:.2f} s"
    assert b.alive()


def test_a_node_that_shuts_down_hands_its_jobs_to_another_at_once(
    nodes: Callable[..., NodeProcess], store: Store, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    nodes("a")
    b = nodes("b")
    ids = submit(store, "held", 4, gate=str(gate))
    wait_until(lambda: len(running_on(store, ids)) == 4, timeout=30)

    assert b.terminate() == 0
    states = {n["name"]: n["state"] for n in store.nodes.rows(60)}
    assert states["b"] == "stopped"
    gate.touch()
    # Well within node_timeout: the jobs were handed back, not found on a dead node.
    wait_until(lambda: all_finished(store, ids), timeout=NODE_TIMEOUT_S)
    assert sorted(job for job, _ in runs(store, "end")) == sorted(ids)


# -- the database restarts -------------------------------------------------------------------


def test_a_postgresql_restart_mid_run_costs_no_node_and_no_job(
    nodes: Callable[..., NodeProcess], store: Store, postgres: PostgresCluster
) -> None:
    a = nodes("a", "serve")
    b = nodes("b")
    ids = submit(store, "counted", 100, ms=20)
    wait_until(lambda: len(runs(store, "end")) >= 10, timeout=30)

    postgres.stop("fast")
    postgres.start()

    more = submit(store, "counted", 20, ms=5)
    wait_until(lambda: all_finished(store, ids + more), timeout=90)
    assert a.alive() and b.alive()
    ends = Counter(job for job, _ in runs(store, "end"))
    assert set(ends) == set(ids + more)
    # A job whose body failed on the database's restart (its own write) ran again at
    # its retry; none is lost, none is left running.
    retried = [job for job in ids + more if store.job("job", job)["attempts"] > 0]
    print(f"PostgreSQL restart: {len(retried)} of {len(ends)} jobs retried")


# -- a replication survives its node -----------------------------------------------------------


def test_a_replication_whose_node_is_killed_mid_blob_finishes_on_another_node(
    tmp_path: Path, cluster_url: str, store: Store
) -> None:
    images = ImageBuilder(tmp_path / "images")
    with (
        RegistryServer(tmp_path / "source") as source,
        RegistryServer(tmp_path / "target") as target,
    ):
        image = images.docker_image([1_500_000, 200_000])
        push_image(images, image, source.host, "library/app", "v1")
        proxy = FaultProxy(source.host).start()
        try:
            big = image.blobs[1].digest
            # The big layer crawls out of the source, once: the node dies in the middle.
            proxy.add(Fault.trickle(200_000, method="GET", path=big))
            project = store.add(Project(name="library"))
            target_row = store.add(ReplicationTarget(name="dr", url=target.url))
            assert project.id is not None and target_row.id is not None
            policy = store.add(
                ReplicationPolicy(project_id=project.id, target_id=target_row.id, name="to-dr")
            )
            a = NodeProcess(tmp_path, cluster_url, "a")
            a.env["JOBSERVICE_REGISTRY_URL"] = proxy.url
            a.start(store)
            b = NodeProcess(tmp_path, cluster_url, "b")
            b.env["JOBSERVICE_REGISTRY_URL"] = proxy.url
            try:
                (job,) = store.insert_jobs(
                    "replication_job",
                    [
                        {
                            "repository": "library/app",
                            "policy_id": policy.id,
                            "operation": "transfer",
                            "tags": ["v1"],
                        }
                    ],
                    wake="replication",
                )
                proxy.wait_fired(1)
                b.start(store)
                a.kill()

                wait_until(
                    lambda: store.status("replication_job", job) == Status.FINISHED,
                    timeout=NODE_TIMEOUT_S + 30,
                )
                assert skopeo_digest(target.host, "library/app", "v1") == skopeo_digest(
                    source.host, "library/app", "v1"
                )
                assert store.job("replication_job", job)["node_id"] == _node_id(store, "b")
            finally:
                for node in (a, b):
                    if node.alive():
                        node.kill()
        finally:
            proxy.stop()


def _node_id(store: Store, name: str) -> int:
    return next(int(n["id"]) for n in store.nodes.rows(60) if n["name"] == name)


def test_a_database_outage_longer_than_the_node_timeout_takes_no_live_node_for_dead(
    nodes: Callable[..., NodeProcess], store: Store, postgres: PostgresCluster, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    a = nodes("a")
    b = nodes("b")
    ids = submit(store, "held", 4, gate=str(gate))
    wait_until(lambda: len(running_on(store, ids)) == 4, timeout=30)
    before = running_on(store, ids)

    postgres.stop("fast")
    # Both nodes miss beats for longer than node_timeout (a beat every 0.5 s).
    misses = int(NODE_TIMEOUT_S / HEARTBEAT_S) + 2
    for node in (a, b):
        wait_until(lambda node=node: node.log().count("heartbeat failed") >= misses, timeout=60)  # type: ignore[misc]
    postgres.start()

    # Back: each node beats again before it takes any other over.
    wait_until(lambda: min(_beat_ages(store).values()) < HEARTBEAT_S * 2, timeout=30)
    wait_until(lambda: max(_beat_ages(store).values()) < HEARTBEAT_S * 2, timeout=30)
    assert running_on(store, ids) == before
    assert {n["name"]: n["state"] for n in store.nodes.rows(60)} == {"a": "live", "b": "live"}
    gate.touch()
    wait_until(lambda: all_finished(store, ids), timeout=30)
    assert sorted(job for job, _ in runs(store, "end")) == sorted(ids)


def _beat_ages(store: Store) -> dict[str, float]:
    return {n["name"]: n["age_s"] for n in store.nodes.rows(60) if n["state"] == "live"}
