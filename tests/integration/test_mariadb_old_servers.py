"""Claims on a MariaDB older than 10.6 (Harbor 1.4 ships 10.2.10), which has no
``FOR UPDATE SKIP LOCKED``: the pick waits for rows another claimant holds, and never
returns one that claimant took meanwhile (two nodes on such a server:
``test_mariadb_engine.py``).

The server is the tests' real MariaDB; only the version it reports to the driver is
that of Harbor 1.4's, so the store takes the path it takes on such a server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pymysql
import pytest
import sqlalchemy as sa
from mariadb import MariaDBServer
from waiting import wait_until

from model.db import Store
from model.status import Status

HARBOR_14_MARIADB = "5.5.5-10.2.10-MariaDB"


@pytest.fixture
def harbor_mariadb(monkeypatch: pytest.MonkeyPatch, mariadb_url: str) -> str:
    """A MariaDB database whose server says it is Harbor 1.4's 10.2.10."""
    monkeypatch.setattr(
        pymysql.connections.Connection, "get_server_info", lambda _self: HARBOR_14_MARIADB
    )
    return mariadb_url


@pytest.fixture
def store(harbor_mariadb: str) -> Iterator[Store]:
    store = Store(harbor_mariadb)
    store.create_all()
    yield store
    store.close()


def _scan_jobs(store: Store, pending: int, finished: int = 0) -> list[int]:
    ids = store.insert_jobs(
        "img_scan_job", [{"repository": "library/app", "tag": "v1", "digest": ""}] * pending
    )
    for job_id in store.insert_jobs(
        "img_scan_job", [{"repository": "library/app", "tag": "v1", "digest": ""}] * finished
    ):
        store.set_status("img_scan_job", job_id, Status.RUNNING)
        store.set_status("img_scan_job", job_id, Status.FINISHED)
    return ids


def _lock_waits(server: MariaDBServer) -> int:
    with server.connect() as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'"
        )
        (count,) = cursor.fetchone()
    return int(count)


def test_a_server_before_10_6_is_taken_and_its_claims_do_without_skip_locked(
    store: Store,
) -> None:
    assert store._writer.skip_locked is False
    ids = _scan_jobs(store, 3)
    assert [row["id"] for row in store.claim_many("img_scan_job", None, 2)] == ids[:2]
    assert [row["id"] for row in store.claim_many("img_scan_job", None, 2)] == ids[2:]
    assert store.claim_many("img_scan_job", None, 2) == []


def test_a_claim_waits_for_a_row_another_claimant_holds_and_skips_it_once_taken(
    store: Store, harbor_mariadb: str, mariadb: MariaDBServer
) -> None:
    first, second = _scan_jobs(store, 2)
    other = mariadb.connect(sa.make_url(harbor_mariadb).database)
    claimed: list[list[int]] = []
    try:
        with other.cursor() as cursor:
            # Another claimant has locked the oldest job and is about to take it.
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            cursor.execute("BEGIN")
            cursor.execute("SELECT id FROM img_scan_job WHERE id = %s FOR UPDATE", (first,))
            claim = threading.Thread(
                target=lambda: claimed.append(
                    [row["id"] for row in store.claim_many("img_scan_job", None, 1)]
                )
            )
            claim.start()
            wait_until(lambda: _lock_waits(mariadb) == 1, timeout=10)
            assert claimed == []
            cursor.execute("UPDATE img_scan_job SET status = 'running' WHERE id = %s", (first,))
            cursor.execute("COMMIT")
        claim.join(10)
    finally:
        other.close()
    assert claimed == [[second]]
    assert store.status("img_scan_job", first) == Status.RUNNING


def test_concurrent_claims_never_share_a_job_nor_take_more_than_they_ask_for(
    store: Store,
) -> None:
    ids = _scan_jobs(store, 45, finished=100)
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE TABLE img_scan_job")
    sizes: list[int] = []
    claimed: list[int] = []
    lock = threading.Lock()

    def claimant() -> None:
        while rows := store.claim_many("img_scan_job", None, 3):
            with lock:
                sizes.append(len(rows))
                claimed.extend(int(row["id"]) for row in rows)

    threads = [threading.Thread(target=claimant) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert max(sizes) <= 3
    assert sorted(claimed) == ids
