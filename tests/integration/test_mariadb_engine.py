"""The engine on a real MariaDB server: two nodes sharing one database never run one
job twice, status writes refused while the server is down land once it is back, and
the health check sees a read-only server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pymysql
import pytest
from enginekinds import Gate, Tracker, gated_kind, tick_kind
from mariadb import MariaDBServer, mariadb_server
from waiting import wait_until

from actors import JobService
from model.db import Store
from model.status import Status

MakeService = Callable[..., JobService]


def _log(service: JobService, kind: str, job_id: int) -> str:
    return Path(service.log_path(kind, job_id)).read_text()


@pytest.mark.parametrize(
    "reported",
    [None, "5.5.5-10.2.10-MariaDB"],
    ids=["skip-locked", "harbor-1.4-mariadb-10.2"],
)
def test_two_nodes_on_one_mariadb_database_run_each_job_once(
    make_service: MakeService,
    mariadb_url: str,
    reported: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if reported is not None:  # claims without SKIP LOCKED, as on Harbor 1.4's server
        monkeypatch.setattr(
            pymysql.connections.Connection, "get_server_info", lambda _self: reported
        )
    tracker = Tracker()
    nodes = [
        make_service(
            [tick_kind("slow", tracker, pool_size=2)],
            database_url=mariadb_url,
            node_name=name,
            poll_interval=0.1,
        )
        for name in ("alpha", "beta")
    ]
    ids = nodes[0].submit_many("slow", [{"ticks": 2, "hold": True}] * 12)
    # Each pool runs two at most: four running at once means both nodes claimed.
    assert tracker.wait_for(lambda: tracker.running == 4)
    tracker.gate.set()
    for job_id in ids:
        assert nodes[1].wait("slow", job_id, 30) == Status.FINISHED
    assert tracker.ticks == {job_id: 2 for job_id in ids}  # a job run twice ticks 4 times
    assert tracker.most_at_once == 4
    assert nodes[0].store.status_counts("job", "slow") == {"finished": 12}


@pytest.fixture
def own_mariadb() -> Iterator[MariaDBServer]:
    """A server of this test's own, which it stops and starts."""
    with mariadb_server() as server:
        yield server


def test_ends_and_claims_refused_while_mariadb_is_down_land_once_it_is_back(
    make_service: MakeService, own_mariadb: MariaDBServer
) -> None:
    gate = Gate()
    service = make_service(
        [gated_kind("gated", gate, pool_size=2)], database_url=own_mariadb.new_database()
    )
    running = [service.submit("gated", {}) for _ in range(2)]
    queued = [service.submit("gated", {}) for _ in range(2)]
    assert gate.wait_running(2)

    own_mariadb.stop("fast")
    gate.opened.set()
    for job_id in running:
        wait_until(
            lambda job_id=job_id: (
                "writing it again until it lands" in _log(service, "gated", job_id)
            ),
            timeout=20,
        )
    own_mariadb.start()

    # No submit wakes the pool: the pool's own timer writes the ends and claims again.
    for job_id in running + queued:
        assert service.wait("gated", job_id, 30) == Status.FINISHED
    for job_id in running:
        assert "status finished recorded" in _log(service, "gated", job_id)
    assert service.store.status_counts("job", "gated") == {"finished": 4}
    assert service.store.check_writable(2.0) is None


def test_the_health_check_names_a_read_only_mariadb_server(
    mariadb: MariaDBServer, mariadb_url: str
) -> None:
    store = Store(mariadb_url)
    admin = mariadb.connect()
    try:
        assert store.check_writable(2.0) is None
        with admin.cursor() as cursor:
            cursor.execute("SET GLOBAL read_only = 1")
        problem = store.check_writable(2.0)
        assert problem is not None and "read-only (read_only is on)" in problem
        assert "127.0.0.1" in problem
    finally:
        with admin.cursor() as cursor:
            cursor.execute("SET GLOBAL read_only = 0")
        admin.close()
        store.close()
    assert store.check_writable(2.0) is None
