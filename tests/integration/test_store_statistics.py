"""On PostgreSQL a claim reads the oldest due jobs in the claim index's order and stops
at its LIMIT. On a large job table that was never analyzed (a restored database, or one
after ``pg_upgrade``) the planner read and sorted every waiting job at each claim; a
service starting on such a table analyzes it first (``Store.analyze_unseen``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from model.db import Store
from model.db._sql import statements_for
from model.settings import Settings

#: Finished jobs, then waiting ones, in a table no ANALYZE has seen.
FINISHED = 200_000
WAITING = 3000


def _never_analyzed(url: str) -> Store:
    store = Store(url)
    store.create_all()
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE job SET (autovacuum_enabled = false)")
        for status, count in (("finished", FINISHED), ("pending", WAITING)):
            conn.exec_driver_sql(
                "INSERT INTO job (kind, status, attempts, params, creation_time, update_time) "
                f"SELECT 'k', '{status}', 0, '{{}}', now(), now() "
                f"FROM generate_series(1, {count})"
            )
    return store


_PARAMS = {"now": datetime.now(UTC).replace(tzinfo=None), "limit": 4, "kind": "k", "node": 1}


def _plan(store: Store, sql: str, params: dict[str, Any]) -> str:
    # On the hot path's own connections, which the pools' claims use.
    rows = store._writer.apply(lambda cur: cur.execute(f"EXPLAIN {sql}", params).fetchall())
    return "\n".join(row[0] for row in rows)


def _claim_plan(store: Store) -> str:
    return _plan(store, statements_for("postgresql").claim("job", True), _PARAMS)


def test_a_large_job_table_without_statistics_is_analyzed_and_claims_stop_at_their_limit(
    postgres_url: str,
) -> None:
    store = _never_analyzed(postgres_url)
    try:
        before = _claim_plan(store)
        analyzed = store.analyze_unseen()
        after = _claim_plan(store)
        again = store.analyze_unseen()
        first = [row["id"] for row in store.claim_many("job", "k", 4)]
    finally:
        store.close()
    assert "Sort" in before, before  # every waiting job read and sorted
    assert analyzed == ["job"]
    assert "Index Scan using job_claim" in after, after
    assert "Sort" not in after and "Bitmap" not in after, after
    assert again == []
    assert first == [FINISHED + 1, FINISHED + 2, FINISHED + 3, FINISHED + 4]


def test_small_tables_and_other_databases_are_left_alone(
    postgres_url: str, make_settings: Callable[..., Settings]
) -> None:
    for url in (postgres_url, make_settings().database_url):
        store = Store(url)
        store.create_all()
        store.insert_jobs("job", [{"kind": "k", "params": {}}] * 10)
        try:
            assert store.analyze_unseen() == []
        finally:
            store.close()


def test_a_starting_service_analyzes_the_table(
    postgres_url: str, make_service: Callable[..., Any]
) -> None:
    _never_analyzed(postgres_url).close()
    service = make_service(database_url=postgres_url)
    assert service.store.analyze_unseen() == []


def test_claims_find_their_picked_jobs_by_id_when_the_statistics_predate_a_backlog(
    postgres_url: str,
) -> None:
    # Statistics taken while nothing waited, then a burst: the planner believes the
    # claim index holds a job or two. The claim's UPDATE must still go to its picked
    # jobs by id, not walk every waiting job once per picked one.
    store = Store(postgres_url)
    store.create_all()
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE job SET (autovacuum_enabled = false)")
        conn.exec_driver_sql(
            "INSERT INTO job (kind, status, attempts, params, creation_time, update_time) "
            f"SELECT 'k', 'finished', 0, '{{}}', now(), now() FROM generate_series(1, {FINISHED})"
        )
        conn.exec_driver_sql("ANALYZE job")
        conn.exec_driver_sql(
            "INSERT INTO job (kind, status, attempts, params, creation_time, update_time) "
            f"SELECT 'k', 'pending', 0, '{{}}', now(), now() FROM generate_series(1, {WAITING})"
        )
    sql = statements_for("postgresql")
    end_and_claim = sql.end_and_claim("job", "finished", False, True, True)
    assert end_and_claim is not None
    try:
        plans = [
            _claim_plan(store),
            _plan(store, end_and_claim, {**_PARAMS, "ids": [1, 2], "status": "finished"}),
        ]
        first = [row["id"] for row in store.claim_many("job", "k", 4)]
    finally:
        store.close()
    for plan in plans:
        assert plan.count("job_claim") == 1, plan  # the pick, and only the pick
        assert "Index Scan using job_pkey" in plan, plan
    assert first == [FINISHED + 1, FINISHED + 2, FINISHED + 3, FINISHED + 4]
