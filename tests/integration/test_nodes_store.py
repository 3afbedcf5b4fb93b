"""The node table and the statements that span nodes, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
import sqlalchemy as sa
from postgres import PostgresCluster

from model.db import Store
from model.db._sql_nodes import FORGET_AFTER
from model.db.nodes import CHANNEL, node_channel
from model.db.tables import NodeState
from model.errors import StatusConflict
from model.status import Status


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.create_all()
    yield store
    store.close()


def _age(store: Store, node: int, seconds: int) -> None:
    """Moves the node's last beat ``seconds`` into the past."""
    with store.engine.begin() as conn:
        heartbeat = conn.execute(
            sa.text("SELECT heartbeat FROM node WHERE id = :id"), {"id": node}
        ).scalar_one()
        if isinstance(heartbeat, str):
            from datetime import datetime

            heartbeat = datetime.fromisoformat(heartbeat)
        from datetime import timedelta

        conn.execute(
            sa.text("UPDATE node SET heartbeat = :at WHERE id = :id"),
            {"at": heartbeat - timedelta(seconds=seconds), "id": node},
        )


def _claim_as(store: Store, node: int | None, table: str = "job", kind: str = "k") -> int:
    store.node = node
    row = store.claim(table, kind if table == "job" else None)
    assert row is not None and row["node_id"] == node
    return int(row["id"])


def test_a_claim_records_its_node_and_only_that_node_writes_the_job(store: Store) -> None:
    a = store.nodes.register("a", "host-a", 1, "test")
    b = store.nodes.register("b", "host-b", 2, "test")
    store.insert_jobs("job", [{"kind": "k", "params": {}}])
    job = _claim_as(store, a)

    store.node = b
    with pytest.raises(StatusConflict):
        store.set_status("job", job, Status.FINISHED)
    store.node = a
    store.set_status("job", job, Status.FINISHED)
    assert store.status("job", job) == Status.FINISHED


def test_a_take_over_leaves_live_nodes_jobs_and_hands_back_dead_ones(store: Store) -> None:
    live = store.nodes.register("live", "host-a", 1, "test")
    dead = store.nodes.register("dead", "host-b", 2, "test")
    taker = store.nodes.register("taker", "host-c", 3, "test")
    store.insert_jobs("job", [{"kind": "k", "params": {}}] * 3)
    on_live = _claim_as(store, live)
    on_dead = _claim_as(store, dead)
    _age(store, dead, 60)

    taken = store.nodes.take_over(taker, "taker", 30)

    assert [(t.table, t.job_id, t.kind, t.dead_node) for t in taken] == [
        ("job", on_dead, "k", "dead")
    ]
    assert store.status("job", on_live) == Status.RUNNING
    assert store.status("job", on_dead) == Status.PENDING
    states = {row["name"]: row["state"] for row in store.nodes.rows(30)}
    assert states == {"live": NodeState.LIVE, "dead": NodeState.GONE, "taker": NodeState.LIVE}
    # The dead node, should it still run, writes nothing to the job it lost.
    store.node = dead
    with pytest.raises(StatusConflict):
        store.set_status("job", on_dead, Status.ERROR)
    assert not store.nodes.beat(dead, {})
    # A second take-over finds nothing more.
    assert store.nodes.take_over(live, "live", 30) == []


def test_a_take_over_hands_back_the_jobs_of_nodes_known_dead_and_of_no_node(
    store: Store,
) -> None:
    crashed = store.nodes.register("crashed", "here", 99, "test")
    taker = store.nodes.register("taker", "here", 100, "test")
    store.insert_jobs(
        "replication_job",
        [{"repository": "l/a", "policy_id": 1, "operation": "transfer", "tags": []}] * 2,
    )
    of_crashed = _claim_as(store, crashed, "replication_job")
    of_none = _claim_as(store, None, "replication_job")

    taken = store.nodes.take_over(taker, "taker", 30, dead=[crashed])

    assert sorted((t.job_id, t.dead_node) for t in taken) == sorted(
        [(of_crashed, "crashed"), (of_none, None)]
    )
    assert store.status("replication_job", of_crashed) == Status.PENDING


def test_a_take_over_with_no_node_known_dead_still_finds_jobs_of_no_node_and_old_nodes(
    store: Store,
) -> None:
    taker = store.nodes.register("taker", "host-a", 1, "test")
    old = store.nodes.register("old", "host-b", 2, "test")
    store.nodes.end(old)
    with store.engine.begin() as conn:  # it ended longer ago than nodes are kept
        conn.execute(
            sa.text("UPDATE node SET ended = :at WHERE id = :id"),
            {"at": datetime.now(UTC).replace(tzinfo=None) - FORGET_AFTER * 2, "id": old},
        )
    assert store.nodes.take_over(taker, "taker", 30) == []
    with store.engine.connect() as conn:
        names = conn.execute(sa.text("SELECT name FROM node ORDER BY id")).scalars().all()
    assert names == ["taker"]

    store.insert_jobs("job", [{"kind": "k", "params": {}}])
    of_none = _claim_as(store, None)
    taken = store.nodes.take_over(taker, "taker", 30)
    assert [(t.job_id, t.dead_node) for t in taken] == [(of_none, None)]
    assert store.status("job", of_none) == Status.PENDING
    assert store.nodes.take_over(taker, "taker", 30) == []


def test_a_stop_request_is_recorded_on_a_running_job_only(store: Store) -> None:
    node = store.nodes.register("a", "host-a", 1, "test")
    store.insert_jobs("job", [{"kind": "k", "params": {}}] * 2)
    running = _claim_as(store, node)
    waiting = running + 1

    assert store.nodes.request_stop("job", running) == node
    assert store.nodes.request_stop("job", waiting) is None
    assert store.nodes.stop_requests(node) == [("job", running, "k")]


def test_beats_count_the_other_live_nodes(store: Store) -> None:
    a = store.nodes.register("a", "host-a", 1, "test")
    assert store.nodes.others_live(a, 30) == 0
    b = store.nodes.register("b", "host-b", 2, "test")
    assert store.nodes.others_live(a, 30) == 1
    assert store.nodes.beat(b, {"k": {"size": 2, "busy": 1}})
    (row,) = [r for r in store.nodes.rows(30) if r["id"] == b]
    assert row["pools"] == {"k": {"size": 2, "busy": 1}}
    assert 0 <= row["age_s"] < 5 and not row["dead"]
    _age(store, b, 60)
    assert store.nodes.others_live(a, 30) == 0
    (row,) = [r for r in store.nodes.rows(30) if r["id"] == b]
    assert row["dead"]
    store.nodes.end(a)
    assert {r["name"]: r["state"] for r in store.nodes.rows(30)}["a"] == NodeState.STOPPED


def test_work_queued_by_no_node_wakes_one_live_node_and_a_node_none_for_its_own_kinds(
    postgres: PostgresCluster,
) -> None:
    url = postgres.new_database()
    store = Store(url)
    store.create_all()
    a = store.nodes.register("a", "host-a", 1, "test")
    b = store.nodes.register("b", "host-b", 2, "test")
    channels = [CHANNEL, node_channel(a), node_channel(b)]
    conninfo = sa.make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(conninfo, autocommit=True) as ear:
        for channel in channels:
            ear.execute(f"LISTEN {channel}")

        def heard_until_mark() -> list[tuple[str, str]]:
            """What came before a mark sent after the queueing (in commit order)."""
            store.nodes.notify(["mark"])
            heard = []
            for note in ear.notifies(timeout=10):
                if note.payload == "mark":
                    return heard
                heard.append((note.channel, note.payload))
            raise AssertionError(f"no mark within 10 s; heard {heard}")

        store.notify_others = True
        store.insert_jobs("job", [{"kind": "k", "params": "{}"}], wake="k")
        first = heard_until_mark()
        store.insert_jobs("job", [{"kind": "k", "params": "{}"}] * 3, wake="k")
        second = heard_until_mark()

        assert len(first) == 1 and first[0][0] in (node_channel(a), node_channel(b))
        assert first[0][1] == "wake k None pass"
        assert second == first  # the same node, for as long as it beats

        store.node, store.local_kinds = a, frozenset({"k"})
        store.insert_jobs("job", [{"kind": "k", "params": "{}"}], wake="k")
        assert heard_until_mark() == []  # its own pool is woken directly
        store.insert_jobs("job", [{"kind": "other", "params": "{}"}], wake="other")
        assert heard_until_mark() == [(CHANNEL, f"wake other {a}")]
    store.close()
