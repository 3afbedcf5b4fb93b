from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from model.crypto import SecretBox
from model.db import Store
from model.db.tables import Project, ReplicationPolicy, ReplicationTarget
from model.errors import NotFound, StatusConflict
from model.joblog import JobLogSink
from model.jobs import JobContext, LastWrite, RepJob, ScanJob
from model.settings import Settings
from model.status import Status


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[JobContext]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/jobs.db",
        log_dir=tmp_path / "logs",
        key_path=tmp_path / "key",
    )
    store = Store(settings.database_url)
    store.create_all()
    sink = JobLogSink()
    sink.install()
    yield JobContext(store, settings, SecretBox(b"0123456789abcdef"), sink)
    sink.remove()
    store.close()


def make_policy(ctx: JobContext, password: str = "t0p-secret") -> int:
    project = ctx.store.add(Project(name="library"))
    target = ctx.store.add(
        ReplicationTarget(
            name="dr",
            url="https://dr.example",
            username="robot",
            password=ctx.box.encrypt(password),
        )
    )
    assert project.id is not None and target.id is not None
    policy = ctx.store.add(
        ReplicationPolicy(project_id=project.id, target_id=target.id, name="to-dr")
    )
    assert policy.id is not None
    return policy.id


def test_a_replication_job_loads_its_policy_target_and_password(ctx: JobContext) -> None:
    policy_id = make_policy(ctx)
    (job_id,) = ctx.store.insert_jobs(
        "replication_job",
        [
            {
                "repository": "library/app",
                "policy_id": policy_id,
                "operation": "transfer",
                "tags": ["v1", "v2"],
            }
        ],
    )
    job = RepJob(ctx, job_id)
    job.init()
    assert job.params is not None
    assert job.params.target_password == "t0p-secret"
    assert job.params.tags == ("v1", "v2")
    assert job.params.repository == "library/app"
    assert "t0p-secret" not in repr(job.params)
    job.logger.info("connecting with t0p-secret")
    assert ctx.sink.flush()
    assert "connecting with ***" in Path(job.log_path).read_text()
    assert "t0p-secret" not in Path(job.log_path).read_text()
    assert job.log_path == str(ctx.settings.log_dir / f"job_{job_id}.log")


def test_a_replication_job_names_what_is_missing(ctx: JobContext) -> None:
    with pytest.raises(NotFound, match="replication_job 41 not found"):
        RepJob(ctx, 41).init()
    (orphan,) = ctx.store.insert_jobs(
        "replication_job",
        [{"repository": "a/b", "policy_id": 5, "operation": "transfer", "tags": []}],
    )
    with pytest.raises(NotFound, match="replication policy 5 not found"):
        RepJob(ctx, orphan).init()
    policy_id = make_policy(ctx)
    policy = ctx.store.get(ReplicationPolicy, policy_id)
    (job_id,) = ctx.store.insert_jobs(
        "replication_job",
        [{"repository": "a/b", "policy_id": policy_id, "operation": "transfer", "tags": []}],
    )
    ctx.store.delete(ReplicationTarget, policy.target_id)
    with pytest.raises(NotFound, match=f"replication target {policy.target_id} not found"):
        RepJob(ctx, job_id).init()


def test_a_scan_job_logs_under_scan_job(ctx: JobContext) -> None:
    (job_id,) = ctx.store.insert_jobs(
        "img_scan_job", [{"repository": "library/app", "tag": "v1", "digest": ""}]
    )
    job = ScanJob(ctx, job_id)
    job.init()
    assert job.params is not None and job.params.tag == "v1"
    assert job.log_path == str(ctx.settings.log_dir / "scan_job" / f"job_{job_id}.log")
    with pytest.raises(NotFound, match="img_scan_job 999 not found"):
        ScanJob(ctx, 999).init()


def test_a_status_change_is_guarded_and_sets_update_time(ctx: JobContext) -> None:
    (job_id,) = ctx.store.insert_jobs(
        "img_scan_job", [{"repository": "library/app", "tag": "v1", "digest": ""}]
    )
    before = ctx.store.job("img_scan_job", job_id)["update_time"]
    ctx.store.set_status("img_scan_job", job_id, Status.RUNNING)
    ctx.store.set_status("img_scan_job", job_id, Status.FINISHED)
    assert ctx.store.job("img_scan_job", job_id)["update_time"] > before
    with pytest.raises(StatusConflict, match="cannot set status 'running' from 'finished'"):
        ctx.store.set_status("img_scan_job", job_id, Status.RUNNING)
    with pytest.raises(StatusConflict, match="no such job"):
        ctx.store.set_status("img_scan_job", 777, Status.RUNNING)


def test_a_job_keeps_its_runs_last_status_for_its_pool_and_writes_the_ones_before(
    ctx: JobContext,
) -> None:
    (job_id,) = ctx.store.insert_jobs(
        "img_scan_job", [{"repository": "library/app", "tag": "v1", "digest": ""}]
    )
    job = ScanJob(ctx, job_id)
    job.init()
    job.update_status(Status.RUNNING)
    assert ctx.store.status("img_scan_job", job_id) == Status.RUNNING
    job.update_status(Status.FINISHED)
    assert (job.status, job.last_write) == (Status.FINISHED, LastWrite(Status.FINISHED))
    assert ctx.store.status("img_scan_job", job_id) == Status.RUNNING
    due = job.schedule_retry(5, count_attempt=False)
    assert job.last_write == LastWrite(Status.RETRYING, due, False)
    assert ctx.store.status("img_scan_job", job_id) == Status.RUNNING
