"""Store.end_and_claim (a pool's ends and its next claim: one statement on PostgreSQL,
two calls elsewhere) and Store.end_and_claim_next (a worker's end, then its next job,
in one write) change what set_statuses, set_status and claim_many would, on every
database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from model.db import Store
from model.errors import StatusConflict
from model.status import Status


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.create_all()
    yield store
    store.close()


def test_the_ends_are_written_and_the_oldest_due_jobs_claimed(store: Store) -> None:
    ids = store.insert_jobs("job", [{"kind": "k", "params": {}} for _ in range(5)])
    running = [row["id"] for row in store.claim_many("job", "k", 2)]
    assert running == ids[:2]

    written, claimed = store.end_and_claim(
        "job", "k", running, Status.FINISHED, count_attempt=True, limit=2
    )

    assert written == set(running)
    assert [row["id"] for row in claimed] == ids[2:4]
    assert all(row["status"] == Status.RUNNING for row in claimed)
    assert [store.status("job", i) for i in ids] == [Status.FINISHED] * 2 + [Status.RUNNING] * 2 + [
        Status.PENDING
    ]
    assert store.job("job", ids[0])["attempts"] == 1


def test_an_end_the_guard_refuses_is_not_written_and_an_empty_claim_takes_nothing(
    store: Store,
) -> None:
    first, second = store.insert_jobs("job", [{"kind": "k", "params": {}} for _ in range(2)])
    (claimed,) = store.claim_many("job", "k", 1)
    assert claimed["id"] == first
    store.stop_waiting("job", id=second)

    # ``second`` is stopped, not running: finished may not follow; nothing is due.
    written, rows = store.end_and_claim("job", "k", [first, second], Status.FINISHED, limit=3)

    # MySQL cannot say which rows changed: with one refused it reports none.
    assert written == (set() if store.url.startswith("mysql") else {first})
    assert rows == []
    assert store.status("job", first) == Status.FINISHED
    assert store.status("job", second) == Status.STOPPED


def test_a_claim_of_another_kind_or_with_no_ends_takes_only_its_kinds_jobs(store: Store) -> None:
    mine, other = store.insert_jobs(
        "job", [{"kind": "k", "params": {}}, {"kind": "other", "params": {}}]
    )

    written, rows = store.end_and_claim("job", "k", [], Status.FINISHED, limit=5)

    assert written == set()
    assert [row["id"] for row in rows] == [mine]
    assert store.status("job", other) == Status.PENDING


def test_a_node_writes_no_end_of_a_job_another_node_claimed(store: Store) -> None:
    (job_id,) = store.insert_jobs("job", [{"kind": "k", "params": {}}])
    store.node = 1
    store.claim_many("job", "k", 1)
    store.node = 2

    written, rows = store.end_and_claim("job", "k", [job_id], Status.FINISHED, limit=1)

    assert written == set() and rows == []
    assert store.status("job", job_id) == Status.RUNNING


def test_a_workers_end_claims_the_oldest_due_job_of_its_kind(store: Store) -> None:
    ids = store.insert_jobs(
        "job", [{"kind": kind, "params": {}} for kind in ("k", "other", "k", "k")]
    )
    running = store.claim("job", "k")
    assert running is not None and running["id"] == ids[0]

    row = store.end_and_claim_next("job", "k", ids[0], Status.FINISHED, count_attempt=True)

    assert row is not None and row["id"] == ids[2] and row["status"] == Status.RUNNING
    assert isinstance(row["params"], dict)
    assert [store.status("job", i) for i in ids] == [
        Status.FINISHED,
        Status.PENDING,
        Status.RUNNING,
        Status.PENDING,
    ]
    assert store.job("job", ids[0])["attempts"] == 1
    assert store.end_and_claim_next("job", "k", ids[2], Status.ERROR)["id"] == ids[3]
    assert store.end_and_claim_next("job", "k", ids[3], Status.FINISHED) is None


def test_a_workers_end_the_guard_refuses_claims_nothing(store: Store) -> None:
    first, second = store.insert_jobs("job", [{"kind": "k", "params": {}} for _ in range(2)])
    store.stop_waiting("job", id=first)  # stopped: finished may not follow

    with pytest.raises(StatusConflict) as refused:
        store.end_and_claim_next("job", "k", first, Status.FINISHED)

    assert refused.value.current == Status.STOPPED
    assert store.status("job", first) == Status.STOPPED
    assert store.status("job", second) == Status.PENDING
