from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from enginekinds import Tracker, crash_kind, ended_elsewhere_kind, flaky_kind, tick_kind
from waiting import wait_until

from actors import JobService
from model.db import Store
from model.errors import InvalidRequest, NotFound, ServiceNotRunning, UnknownKind, WaitTimeout
from model.status import Status

MakeService = Callable[..., JobService]


def log_of(service: JobService, kind: str, job_id: int) -> str:
    return Path(service.log_path(kind, job_id)).read_text()


def test_a_pool_of_two_never_runs_three_jobs_at_once(make_service: MakeService) -> None:
    tracker = Tracker()
    service = make_service([tick_kind("slow", tracker, pool_size=2)])
    ids = [service.submit("slow", {"ticks": 3, "hold": True}) for _ in range(10)]
    assert tracker.wait_for(lambda: tracker.running == 2)
    stats = service.stats()["slow"]
    assert stats["busy"] == 2 and stats["queued"] == 8
    tracker.gate.set()
    for job_id in ids:
        assert service.wait("slow", job_id, 20) == Status.FINISHED
    assert tracker.most_at_once == 2
    assert sorted(tracker.finished) == ids


def test_jobs_run_in_the_order_they_were_submitted(make_service: MakeService) -> None:
    tracker = Tracker()
    service = make_service([tick_kind("ordered", tracker, pool_size=1)])
    ids = [service.submit("ordered", {"ticks": 1}) for _ in range(5)]
    assert service.wait("ordered", ids[-1], 20) == Status.FINISHED
    assert tracker.finished == ids


def test_a_job_that_wait_reports_ended_has_every_state_in_its_log_file(
    make_service: MakeService,
) -> None:
    tracker = Tracker()
    service = make_service([tick_kind("logged", tracker, pool_size=2)])
    ids = [service.submit("logged", {"ticks": 2}) for _ in range(20)]
    for job_id in ids:
        assert service.wait("logged", job_id, 20) == Status.FINISHED
        # Read straight from the file, as another program would: no flush asked for.
        job = service.kinds["logged"].make_job(service._context(), job_id)
        states = [
            line.split("] state ")[1].split(" ")[0]
            for line in Path(job.log_path).read_text().splitlines()
            if "] state " in line
        ]
        assert states[0] == Status.RUNNING and states[-1] == Status.FINISHED


def test_a_job_is_reported_ended_only_once_its_end_is_in_the_database(
    make_service: MakeService,
) -> None:
    tracker = Tracker()
    service = make_service([tick_kind("recorded", tracker, pool_size=3)])
    seen: dict[int, tuple[str, str]] = {}
    all_seen = threading.Event()

    def listener(kind: str, job_id: int, status: str) -> None:
        seen[job_id] = (status, service.store.status("job", job_id))
        if len(seen) == 30:
            all_seen.set()

    service.add_job_listener(listener)
    ids = [service.submit("recorded", {"ticks": 1}) for _ in range(30)]
    assert all_seen.wait(20)
    assert seen == {job_id: (Status.FINISHED, Status.FINISHED) for job_id in ids}


def test_a_job_ended_elsewhere_while_running_keeps_that_status(make_service: MakeService) -> None:
    service = make_service([ended_elsewhere_kind()])
    job_id = service.submit("elsewhere", {})
    assert service.wait("elsewhere", job_id, 20) == Status.CANCELED
    # The status was canceled by the step itself, before the machine's end: the end's
    # refusal reaches the log a moment after the wait sees it.
    refused = "cannot set status 'finished' from 'canceled'; keeping status 'canceled'"
    assert wait_until(lambda: refused in log_of(service, "elsewhere", job_id), timeout=10)
    assert "state finished" in log_of(service, "elsewhere", job_id)


def test_stop_of_a_pending_job_means_it_never_runs(make_service: MakeService) -> None:
    tracker = Tracker()
    service = make_service([tick_kind("slow", tracker, pool_size=1)])
    first = service.submit("slow", {"ticks": 1, "hold": True})
    second = service.submit("slow", {"ticks": 1})
    assert tracker.wait_for(lambda: tracker.running == 1)
    assert service.stop("slow", second) == Status.PENDING
    assert service.status("slow", second) == Status.STOPPED
    tracker.gate.set()
    assert service.wait("slow", first, 20) == Status.FINISHED
    assert second not in tracker.ticks
    assert "state stopped" in log_of(service, "slow", second)


def test_a_running_job_stops_before_its_next_transition(make_service: MakeService) -> None:
    tracker = Tracker()
    service = make_service([tick_kind("slow", tracker, pool_size=1)])
    job_id = service.submit("slow", {"ticks": 50, "hold": True})
    assert tracker.wait_for(lambda: tracker.ticks.get(job_id) == 1)
    assert service.stop("slow", job_id) == Status.RUNNING
    tracker.gate.set()
    assert service.wait("slow", job_id, 20) == Status.STOPPED
    # The stop arrived during tick 1: tick 2 never ran.
    assert tracker.ticks[job_id] == 1
    assert tracker.running == 0
    log = log_of(service, "slow", job_id)
    assert log.index("state tick") < log.index("state stopped")


def test_a_retrying_job_can_be_stopped(make_service: MakeService) -> None:
    service = make_service([flaky_kind()], retry_delay=60, retry_delay_max=60)
    job_id = service.submit("flaky", {"fail_times": 3})
    deadline_status = _wait_status(service, "flaky", job_id, Status.RETRYING)
    assert deadline_status == Status.RETRYING
    assert service.stats()["flaky"]["delayed"] == 1
    assert service.stop("flaky", job_id) == Status.RETRYING
    assert service.wait("flaky", job_id, 5) == Status.STOPPED


def test_a_failing_job_retries_with_backoff_then_finishes(make_service: MakeService) -> None:
    service = make_service([flaky_kind()], retry_delay=0.05, retry_delay_max=0.1, max_retries=5)
    job_id = service.submit("flaky", {"fail_times": 3})
    assert service.wait("flaky", job_id, 20) == Status.FINISHED
    row = service.store.job("job", job_id)
    assert row["attempts"] == 3
    log = log_of(service, "flaky", job_id)
    delays = [
        line.split(" in ")[1].split(" s")[0] for line in log.splitlines() if "] retry " in line
    ]
    assert [float(d) for d in delays] == [0.05, 0.1, 0.1]
    assert log.count("registry unreachable") >= 3


def test_retries_exhausted_end_in_error_with_the_reason(make_service: MakeService) -> None:
    service = make_service([flaky_kind()], retry_delay=0.01, retry_delay_max=0.02, max_retries=2)
    job_id = service.submit("flaky", {"fail_times": 10})
    assert service.wait("flaky", job_id, 20) == Status.ERROR
    assert service.store.job("job", job_id)["attempts"] == 2
    assert "giving up after 2 retries; last failure: registry unreachable (attempt 3)" in log_of(
        service, "flaky", job_id
    )


def test_a_crashed_worker_is_replaced_and_the_pool_keeps_its_size(
    make_service: MakeService,
) -> None:
    tracker = Tracker()
    service = make_service([crash_kind("fragile", tracker, pool_size=2)])
    crashing = service.submit("fragile", {"crash": True})
    assert service.wait("fragile", crashing, 20) == Status.ERROR
    assert "worker died" in log_of(service, "fragile", crashing)
    ids = [service.submit("fragile", {"ticks": 2, "hold": True}) for _ in range(4)]
    assert tracker.wait_for(lambda: tracker.running == 2)
    assert service.stats()["fragile"]["busy"] == 2
    tracker.gate.set()
    for job_id in ids:
        assert service.wait("fragile", job_id, 20) == Status.FINISHED
    assert tracker.most_at_once == 2


def test_two_claimants_never_win_the_same_job(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/claims.db")
    store.create_all()
    ids = store.insert_jobs("job", [{"kind": "k", "params": {"n": i}} for i in range(300)])
    won: list[list[int]] = [[] for _ in range(6)]
    start = threading.Barrier(6)

    def claimant(mine: list[int]) -> None:
        start.wait()
        while (row := store.claim("job", "k")) is not None:
            mine.append(int(row["id"]))

    threads = [threading.Thread(target=claimant, args=(w,)) for w in won]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    claimed = [job_id for mine in won for job_id in mine]
    assert sorted(claimed) == ids
    assert store.status_counts("job") == {"running": 300}


def test_concurrent_writers_never_see_database_is_locked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/busy.db"
    stores = [Store(url) for _ in range(3)]  # three engines: as three processes would
    stores[0].create_all()
    errors: list[BaseException] = []

    def writer(store: Store) -> None:
        try:
            for _ in range(100):
                (job_id,) = store.insert_jobs("job", [{"kind": "k", "params": {}}])
                store.set_status("job", job_id, Status.RUNNING)
                store.set_status("job", job_id, Status.FINISHED)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in stores for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert stores[0].status_counts("job") == {"finished": 600}


def test_bad_requests_are_refused_and_write_nothing(make_service: MakeService) -> None:
    service = make_service([flaky_kind()])
    with pytest.raises(UnknownKind, match="unknown job kind 'nope'"):
        service.submit("nope", {})
    with pytest.raises(NotFound, match="replication policy 99 not found"):
        service.replicate(99, "library/app")
    with pytest.raises(InvalidRequest, match="policy_id: must not be negative"):
        service.replicate(-1, "library/app")
    with pytest.raises(InvalidRequest, match="policy_id: must be an integer"):
        service.replicate("1", "library/app")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="repository"):
        service.scan("", "latest")
    with pytest.raises(InvalidRequest, match=r"tags\[1\]"):
        service.replicate(1, "library/app", ["v1", ""])
    with pytest.raises(InvalidRequest, match=r"tags\[0\]: 'bad tag!' is not a valid tag"):
        service.replicate(1, "library/app", ["bad tag!"])
    with pytest.raises(InvalidRequest, match="operation"):
        service.replicate(1, "library/app", operation="move")
    with pytest.raises(InvalidRequest, match="job_id"):
        service.stop("flaky", -3)
    with pytest.raises(InvalidRequest, match="params"):
        service.submit("flaky", {"x": object()})
    with pytest.raises(NotFound):
        service.status("flaky", 12345)
    for table in ("job", "replication_job", "img_scan_job"):
        assert service.store.status_counts(table) == {}


def test_wait_raises_at_its_deadline(make_service: MakeService) -> None:
    tracker = Tracker()
    service = make_service([tick_kind("slow", tracker, pool_size=1)])
    job_id = service.submit("slow", {"ticks": 1, "hold": True})
    with pytest.raises(WaitTimeout, match=f"slow job {job_id} still 'running'"):
        service.wait("slow", job_id, 0.2)
    tracker.gate.set()
    assert service.wait("slow", job_id, 20) == Status.FINISHED


def test_a_service_that_is_shut_down_refuses_work(make_service: MakeService) -> None:
    service = make_service([flaky_kind()])
    service.shutdown()
    with pytest.raises(ServiceNotRunning):
        service.submit("flaky", {})
    assert not service.healthy()


def test_shutdown_hands_running_jobs_back_and_the_next_start_resumes_them(
    make_service: MakeService,
) -> None:
    tracker = Tracker()
    kinds = [tick_kind("slow", tracker, pool_size=2)]
    service = make_service(kinds)
    ids = [service.submit("slow", {"ticks": 3, "hold": True}) for _ in range(4)]
    assert tracker.wait_for(lambda: tracker.running == 2)
    releaser = threading.Timer(0.2, tracker.gate.set)
    releaser.start()
    service.shutdown(10)
    releaser.join()
    store = Store(service.settings.database_url)
    counts = store.status_counts("job")
    store.close()
    assert counts.get("running", 0) == 0
    assert counts.get("pending", 0) >= 2
    again = JobService(service.settings, kinds).start()
    try:
        for job_id in ids:
            assert again.wait("slow", job_id, 20) == Status.FINISHED
    finally:
        again.shutdown()


def test_start_resumes_running_and_retrying_jobs_keeping_the_due_time(
    make_service: MakeService, make_settings: Callable[..., object]
) -> None:
    service = make_service([flaky_kind()], retry_delay=0.3, retry_delay_max=0.3)
    settings = service.settings
    service.shutdown()
    store = Store(settings.database_url)
    running, retrying, pending = store.insert_jobs(
        "job", [{"kind": "flaky", "params": {}} for _ in range(3)]
    )
    store.set_status("job", running, Status.RUNNING)
    store.set_status("job", retrying, Status.RUNNING)
    due = store.schedule_retry("job", retrying, 0.5)
    store.close()
    again = JobService(settings, [flaky_kind()]).start()
    try:
        for job_id in (running, pending, retrying):
            assert again.wait("flaky", job_id, 20) == Status.FINISHED
        row = again.store.job("job", retrying)
        assert row["update_time"] >= due
    finally:
        again.shutdown()


@pytest.mark.parametrize("server", ["postgres", "mariadb"])
def test_the_engine_claims_stops_and_retries_on_postgresql_and_mariadb_too(
    make_service: MakeService, server: str, request: pytest.FixtureRequest
) -> None:
    database = request.getfixturevalue(server)
    tracker = Tracker()
    service = make_service(
        [tick_kind("slow", tracker, pool_size=2), flaky_kind()],
        database_url=database.new_database(),
    )
    ids = [service.submit("slow", {"ticks": 2, "hold": True}) for _ in range(5)]
    flaky = service.submit("flaky", {"fail_times": 1})
    assert tracker.wait_for(lambda: tracker.running == 2)
    stopped = ids[0] if tracker.ticks.get(ids[0]) else ids[1]
    assert service.stop("slow", stopped) == Status.RUNNING
    tracker.gate.set()
    assert service.wait("slow", stopped, 20) == Status.STOPPED
    for job_id in ids:
        if job_id != stopped:
            assert service.wait("slow", job_id, 20) == Status.FINISHED
    assert service.wait("flaky", flaky, 20) == Status.FINISHED
    assert tracker.most_at_once == 2
    assert tracker.ticks[stopped] == 1
    assert service.store.job("job", flaky)["attempts"] == 1


def _wait_status(service: JobService, kind: str, job_id: int, status: str) -> str:
    return wait_until(lambda: service.status(kind, job_id) == status and status)


def test_a_job_taking_transitions_back_to_back_is_handed_back_between_two_at_shutdown(
    make_service: MakeService, tmp_path: Path
) -> None:
    tracker = Tracker()
    service = make_service([tick_kind("busy", tracker, pool_size=1)])
    ticks = 10_000_000  # hours of transitions, none of which waits
    job_id = service.submit("busy", {"ticks": ticks})
    assert tracker.wait_for(lambda: tracker.ticks.get(job_id, 0) > 100)
    log = Path(service.log_path("busy", job_id))
    service.shutdown(10)
    # The release reached the worker between two transitions.
    assert tracker.ticks[job_id] < ticks
    store = Store(f"sqlite:///{tmp_path}/jobservice.db")
    try:
        assert store.status("job", job_id) == Status.PENDING
    finally:
        store.close()
    assert "job handed back as pending" in log.read_text()
