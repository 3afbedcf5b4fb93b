from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from model.db import Store
from model.db.tables import (
    ImgScanOverview,
    Project,
    ReplicationPolicy,
    ReplicationTarget,
    ScanFinding,
    Schedule,
    utcnow,
)
from model.errors import NotFound, StatusConflict
from model.status import Status


@pytest.fixture
def store(database_url: str) -> Store:
    store = Store(database_url)
    store.create_all()
    yield store  # type: ignore[misc]
    store.close()


def test_jobs_round_trip_with_their_lists_and_json(store: Store) -> None:
    (rep,) = store.insert_jobs(
        "replication_job",
        [{"repository": "lib/app", "policy_id": 1, "operation": "delete", "tags": ["a", "b"]}],
    )
    (gen,) = store.insert_jobs("job", [{"kind": "k", "params": {"n": [1, 2], "s": "x"}}])
    assert store.job("replication_job", rep)["tags"] == ["a", "b"]
    assert store.job("job", gen)["params"] == {"n": [1, 2], "s": "x"}
    claimed = store.claim("job", "k")
    assert claimed is not None and claimed["params"] == {"n": [1, 2], "s": "x"}
    assert claimed["status"] == Status.RUNNING


def test_status_changes_are_guarded_updates(store: Store) -> None:
    (job_id,) = store.insert_jobs(
        "img_scan_job", [{"repository": "lib/app", "tag": "v1", "digest": ""}]
    )
    with pytest.raises(StatusConflict, match="cannot set status 'finished' from 'pending'"):
        store.set_status("img_scan_job", job_id, Status.FINISHED)
    store.set_status("img_scan_job", job_id, Status.RUNNING)
    store.set_status("img_scan_job", job_id, Status.FINISHED)
    with pytest.raises(StatusConflict):
        store.set_status("img_scan_job", job_id, Status.STOPPED)
    assert store.status("img_scan_job", job_id) == Status.FINISHED


def test_claims_take_the_oldest_due_job_and_skip_stopped_and_future_retries(store: Store) -> None:
    first, second, third, fourth = store.insert_jobs(
        "job", [{"kind": "k", "params": {}} for _ in range(4)]
    )
    store.stop_waiting("job", id=first)
    store.set_status("job", second, Status.RUNNING)
    store.schedule_retry("job", second, 3600)
    claimed = store.claim("job", "k")
    assert claimed is not None and claimed["id"] == third
    assert store.claim("job", "other-kind") is None
    claimed = store.claim("job", "k")
    assert claimed is not None and claimed["id"] == fourth
    assert store.claim("job", "k") is None
    earliest = store.next_due(after=utcnow())
    assert earliest is not None and earliest > utcnow() + timedelta(seconds=3500)
    assert store.queue_counts("job", "k") == (0, 1)


def test_statuses_of_several_jobs_change_in_one_write_each_guarded_as_one(
    store: Store,
) -> None:
    ids = store.insert_jobs("job", [{"kind": "k", "params": {}}] * 4)
    running = [int(row["id"]) for row in store.claim_many("job", "k", 3)]
    assert store.set_statuses("job", running, Status.FINISHED) == set(running)
    assert [store.status("job", i) for i in ids] == [Status.FINISHED] * 3 + [Status.PENDING]
    (pending,) = set(ids) - set(running)
    store.set_status("job", pending, Status.RUNNING)
    # A job that may not take the status is left as it is; the others change. MySQL
    # cannot say which rows changed: it reports none, for each to be written alone.
    written = store.set_statuses("job", [running[0], pending], Status.ERROR)
    assert written == (set() if store.engine.dialect.name == "mysql" else {pending})
    assert store.status("job", running[0]) == Status.FINISHED
    assert store.status("job", pending) == Status.ERROR


def test_has_due_reads_what_a_claim_would_take(store: Store) -> None:
    assert not store.has_due("job", "k")
    first, second = store.insert_jobs("job", [{"kind": "k", "params": {}}] * 2)
    assert store.has_due("job", "k") and store.has_due("job")
    assert not store.has_due("job", "other-kind")
    store.stop_waiting("job", id=first)
    store.set_status("job", second, Status.RUNNING)
    assert not store.has_due("job", "k")
    store.schedule_retry("job", second, 3600)
    assert not store.has_due("job", "k")  # retrying, not due for an hour
    store.set_status("job", second, Status.RUNNING)
    store.schedule_retry("job", second, 0)
    assert store.has_due("job", "k")
    assert store.claim("job", "k") is not None
    assert not store.has_due("job", "k")


def test_concurrent_claimants_never_share_a_job(store: Store) -> None:
    ids = store.insert_jobs("job", [{"kind": "k", "params": {}} for _ in range(200)])
    won: list[list[int]] = [[] for _ in range(4)]
    barrier = threading.Barrier(4)

    def claimant(mine: list[int]) -> None:
        barrier.wait()
        while (row := store.claim("job", "k")) is not None:
            mine.append(int(row["id"]))

    threads = [threading.Thread(target=claimant, args=(w,)) for w in won]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(i for w in won for i in w) == ids


def test_policies_name_what_is_missing(store: Store) -> None:
    with pytest.raises(NotFound, match="replication policy 3 not found"):
        store.policy_with_target(3)
    project = store.add(Project(name="library"))
    target = store.add(ReplicationTarget(name="t", url="http://t"))
    assert project.id is not None and target.id is not None
    policy = store.add(ReplicationPolicy(project_id=project.id, target_id=target.id, name="p"))
    assert policy.id is not None
    assert store.policy_with_target(policy.id)[2].name == "library"
    store.delete(ReplicationTarget, target.id)
    with pytest.raises(NotFound, match=f"replication target {target.id} not found"):
        store.policy_with_target(policy.id)


def test_scan_results_are_upserted_by_digest(store: Store) -> None:
    digest = "sha256:" + "a" * 64

    def finding(job: int, vuln: str) -> ScanFinding:
        return ScanFinding(
            image_digest=digest, scan_job_id=job, vulnerability_id=vuln, package="p", version="1"
        )

    store.save_scan_result(
        ImgScanOverview(image_digest=digest, scan_job_id=1, severity=3, components_overview="{}"),
        [finding(1, "CVE-1"), finding(1, "CVE-2")],
    )
    store.save_scan_result(
        ImgScanOverview(image_digest=digest, scan_job_id=2, severity=5, components_overview="{}"),
        [finding(2, "CVE-3")],
    )
    (overview,) = store.list_rows(ImgScanOverview)
    assert (overview.scan_job_id, overview.severity) == (2, 5)
    assert [f.vulnerability_id for f in store.list_rows(ScanFinding)] == ["CVE-3"]


def test_the_next_due_time_is_the_earliest_future_retry_or_enabled_schedule(store: Store) -> None:
    now = utcnow()
    assert store.next_due(after=now) is None
    (job_id,) = store.insert_jobs("job", [{"kind": "k", "params": {}}])
    store.set_status("job", job_id, Status.RUNNING)
    retry_at = store.schedule_retry("job", job_id, 3600)
    assert store.next_due(after=now) == retry_at
    fires_at = now + timedelta(minutes=10)
    store.add(Schedule(kind="scan", pattern="library/*", cron="0 * * * *", next_fire_at=fires_at))
    store.add(
        Schedule(
            kind="scan",
            pattern="library/off",
            cron="0 * * * *",
            enabled=False,
            next_fire_at=now + timedelta(minutes=1),
        )
    )
    assert store.next_due(after=now) == fires_at
    assert not store.schedule_due(now)
    # A time already come is the scheduler's at once, not a time to wake for.
    assert store.schedule_due(now + timedelta(minutes=11))
    assert store.next_due(after=now + timedelta(minutes=11)) == retry_at
    assert store.next_due(after=retry_at) is None
