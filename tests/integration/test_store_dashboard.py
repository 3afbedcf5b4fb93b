"""The dashboard's reads (model/db/dashboard.py) on every database: one paged list over
the kinds' tables, filtered by kind, status, repository and policy; the jobs ended per
minute; the last failures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from model.db import Store
from model.db.dashboard import PAGE_SIZE, JobFilter, ended_per_minute, job_page, last_failures
from model.kinds import BUILTIN_KINDS, JobKind
from model.sm import SM, Job
from model.status import Status


def _no_transitions(sm: SM, job: Job) -> None:
    return None


KINDS = [*BUILTIN_KINDS, JobKind("noop", _no_transitions), JobKind("other", _no_transitions)]


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.create_all()
    yield store
    store.close()


def _end(store: Store, table: str, job_id: int, status: Status) -> None:
    store.set_status(table, job_id, Status.RUNNING)
    store.set_status(table, job_id, status)


def test_one_page_lists_every_kinds_jobs_newest_first_and_filters_narrow_it(store: Store) -> None:
    (rep,) = store.insert_jobs(
        "replication_job",
        [{"repository": "lib/app", "policy_id": 7, "operation": "transfer", "tags": ["v1"]}],
    )
    (scan,) = store.insert_jobs("img_scan_job", [{"repository": "lib/db", "tag": "v2"}])
    noop, other = store.insert_jobs(
        "job", [{"kind": "noop", "params": {"n": 1}}, {"kind": "other", "params": {}}]
    )
    _end(store, "job", noop, Status.ERROR)

    every = job_page(store, KINDS, JobFilter(), 1)
    assert every.total == 4 and every.page == 1 and every.pages == 1
    assert {(r["kind"], r["id"]) for r in every.rows} == {
        ("replication", rep),
        ("scan", scan),
        ("noop", noop),
        ("other", other),
    }
    by_kind = {r["kind"]: r for r in every.rows}
    assert by_kind["replication"]["policy_id"] == 7 and "v1" in by_kind["replication"]["detail"]
    assert by_kind["scan"]["detail"] == "v2" and by_kind["noop"]["repository"] is None
    assert by_kind["noop"]["creation_time"].tzinfo is not None

    assert [r["id"] for r in job_page(store, KINDS, JobFilter(kind="other"), 1).rows] == [other]
    errors = job_page(store, KINDS, JobFilter(status=Status.ERROR), 1)
    assert [(r["kind"], r["id"]) for r in errors.rows] == [("noop", noop)]
    # A repository filter rules out the kinds without a repository; "_" is no wildcard.
    lib = job_page(store, KINDS, JobFilter(repository="lib/"), 1)
    assert {r["kind"] for r in lib.rows} == {"replication", "scan"}
    assert job_page(store, KINDS, JobFilter(repository="lib_"), 1).total == 0
    policy = job_page(store, KINDS, JobFilter(policy_id=7), 1)
    assert [(r["kind"], r["id"]) for r in policy.rows] == [("replication", rep)]


def test_pages_hold_page_size_rows_and_a_page_past_the_end_is_the_last(store: Store) -> None:
    ids = store.insert_jobs("job", [{"kind": "noop", "params": {}} for _ in range(PAGE_SIZE + 3)])
    first = job_page(store, KINDS, JobFilter(kind="noop"), 1)
    assert first.total == PAGE_SIZE + 3 and first.pages == 2 and len(first.rows) == PAGE_SIZE
    last = job_page(store, KINDS, JobFilter(kind="noop"), 99)
    assert last.page == 2 and len(last.rows) == 3
    assert {r["id"] for r in first.rows + last.rows} == set(ids)
    assert job_page(store, [], JobFilter(), 1).total == 0


def test_failures_and_ended_jobs_are_counted_from_the_database(store: Store) -> None:
    failed, finished, waiting = store.insert_jobs(
        "job", [{"kind": "noop", "params": {}} for _ in range(3)]
    )
    _end(store, "job", failed, Status.ERROR)
    _end(store, "job", finished, Status.FINISHED)

    assert [r["id"] for r in last_failures(store, KINDS)] == [failed]
    assert last_failures(store, []) == []
    minutes = ended_per_minute(store, KINDS, minutes=5)
    assert len(minutes) == 5 and sum(minutes) == 2 and minutes[-1] >= 1
    assert store.status("job", waiting) == Status.PENDING
