"""A job submitted to a pool with an idle worker and an empty queue goes straight to
that worker, inserted ``running`` (no claim), and the worker writes its end; a stop
that comes before it reaches the worker wins, one that comes as it runs stops it, and
a job whose worker is gone is written back ``pending`` and runs at the next start. A
worker done with a handed job is offered again with no message to its pool, and a job
queued meanwhile waits only for the pool's next message. A backlog drains with each
worker claiming its next job itself, and submits queued before the pool reads a wake
do not wake it again.
Real SQLite files; the first two and the backlog also on PostgreSQL and MariaDB."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from enginekinds import Tracker, tick_kind
from waiting import wait_until

from actors import JobService
from actors.base import ask
from actors.handoff import HandoffSlots
from actors.messages import PoolStats, PoolStatus, Wake, WorkerIdle
from actors.pool import WorkerPool
from model.db import Store
from model.status import Status

MakeService = Callable[..., JobService]


def slots_of(service: JobService, kind: str) -> HandoffSlots:
    return service._slots[kind]


def idle_offered(service: JobService, kind: str, count: int) -> None:
    """Waits until the pool offers ``count`` idle workers (its queue is empty)."""
    slots = slots_of(service, kind)
    wait_until(lambda: slots.free == count, timeout=10)


def warmed(service: JobService, kind: str, size: int) -> int:
    """Runs one job of ``kind`` (the first claim finds the queue empty) and waits until
    the pool offers its ``size`` idle workers; returns that job's id."""
    warm = service.submit(kind, {"ticks": 1})
    assert service.wait(kind, warm, 20) == Status.FINISHED
    idle_offered(service, kind, size)
    return warm


def held_pool(
    make_service: MakeService, size: int, **options: Any
) -> tuple[Tracker, JobService, int, list[int]]:
    """A service with one ``slow`` pool of ``size`` workers, warmed, each of its workers
    holding a job handed over until ``tracker.gate`` is set: the tracker, the service,
    the warm-up job and the held jobs."""
    tracker = Tracker()
    service = make_service([tick_kind("slow", tracker, pool_size=size)], **options)
    warm = warmed(service, "slow", size)
    held = [service.submit("slow", {"ticks": 1, "hold": True}) for _ in range(size)]
    assert tracker.wait_for(lambda: tracker.running == size)
    return tracker, service, warm, held


def pool_of(service: JobService, kind: str) -> WorkerPool:
    actor = service._pools[kind]._actor_weakref()
    assert isinstance(actor, WorkerPool)
    return actor


def messages_seen(pool: WorkerPool, until: threading.Event | None = None) -> list[Any]:
    """Records every message ``pool`` takes from now on; with ``until``, the pool takes
    none (not even the slots back) until it is set."""
    seen: list[Any] = []
    on_receive = pool.on_receive

    def receive(message: Any) -> Any:
        if until is not None:
            until.wait(20)
        seen.append(message)
        return on_receive(message)

    pool.on_receive = receive  # type: ignore[method-assign]
    return seen


def claims_seen(store: Store) -> list[int]:
    """Records the ids every claim of ``store`` takes from now on."""
    claimed: list[int] = []
    claim_many, end_and_claim = store.claim_many, store.end_and_claim
    end_and_claim_next = store.end_and_claim_next

    def claim(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        rows = claim_many(*args, **kwargs)
        claimed.extend(int(row["id"]) for row in rows)
        return rows

    def end_then_claim(*args: Any, **kwargs: Any) -> tuple[set[int], list[dict[str, Any]]]:
        written, rows = end_and_claim(*args, **kwargs)
        claimed.extend(int(row["id"]) for row in rows)
        return written, rows

    def end_then_next(*args: Any, **kwargs: Any) -> dict[str, Any] | None:
        row = end_and_claim_next(*args, **kwargs)
        # On MySQL it claims through claim_many, which recorded the job already.
        if row is not None and not store._sql.in_steps:
            claimed.append(int(row["id"]))
        return row

    store.claim_many = claim  # type: ignore[method-assign]
    store.end_and_claim = end_then_claim  # type: ignore[method-assign]
    store.end_and_claim_next = end_then_next  # type: ignore[method-assign]
    return claimed


def test_a_job_submitted_to_an_idle_pool_runs_on_its_worker_without_a_claim(
    make_service: MakeService, database_url: str
) -> None:
    tracker = Tracker()
    service = make_service([tick_kind("quick", tracker, pool_size=2)], database_url=database_url)
    first = service.submit("quick", {"ticks": 1})  # the first claim finds the queue empty
    assert service.wait("quick", first, 20) == Status.FINISHED
    claimed = claims_seen(service.store)
    heard: dict[int, tuple[str, str]] = {}

    def listener(_kind: str, job_id: int, status: str) -> None:
        # Told once the end is in the database, by the thread that committed it: the
        # worker, or one whose own write held SQLite's lock then (never the pool).
        heard[job_id] = (service.store.status("job", job_id), threading.current_thread().name)
        assert status == Status.FINISHED

    service.add_job_listener(listener)
    ids = []
    for _ in range(5):
        idle_offered(service, "quick", 2)
        job_id = service.submit("quick", {"ticks": 2})
        ids.append(job_id)
        assert service.wait("quick", job_id, 20) == Status.FINISHED
    assert claimed == []
    assert tracker.finished == [first, *ids]
    assert wait_until(lambda: len(heard) == len(ids), timeout=10)
    assert {heard[job_id][0] for job_id in ids} == {Status.FINISHED}
    assert not any(heard[job_id][1].startswith("WorkerPool") for job_id in ids), heard
    for job_id in ids:
        log = Path(service.log_path("quick", job_id)).read_text()
        assert "state running" in log and "state finished" in log
        assert service.job("quick", job_id)["attempts"] == 0


def test_a_worker_done_with_a_handed_job_is_offered_again_without_a_message_to_its_pool(
    make_service: MakeService,
) -> None:
    tracker = Tracker()
    service = make_service([tick_kind("quick", tracker, pool_size=2)])
    warm = warmed(service, "quick", 2)
    seen = messages_seen(pool_of(service, "quick"))
    claimed = claims_seen(service.store)
    ids = []
    for _ in range(10):
        job_id = service.submit("quick", {"ticks": 1})
        ids.append(job_id)
        assert service.wait("quick", job_id, 20) == Status.FINISHED
        idle_offered(service, "quick", 2)
    assert tracker.finished == [warm, *ids]
    assert claimed == []
    assert [m for m in seen if isinstance(m, WorkerIdle)] == []
    assert slots_of(service, "quick").handed_jobs == []


def test_a_job_queued_while_a_worker_comes_back_is_claimed_at_the_pools_next_message(
    make_service: MakeService,
) -> None:
    tracker, service, warm, (held,) = held_pool(make_service, 1)
    # The pool takes no message (its slots stay offered) until the end.
    go_on = threading.Event()
    seen = messages_seen(pool_of(service, "slow"), until=go_on)
    try:
        claimed = claims_seen(service.store)
        queued = service.submit("slow", {"ticks": 1})  # no free worker: queued, pool woken
        assert service.status("slow", queued) == Status.PENDING
        tracker.gate.set()
        assert service.wait("slow", held, 20) == Status.FINISHED
        idle_offered(service, "slow", 1)  # the worker came back by itself
        later = service.submit("slow", {"ticks": 1})
        assert service.wait("slow", later, 20) == Status.FINISHED
        assert service.status("slow", queued) == Status.PENDING
        go_on.set()
        assert service.wait("slow", queued, 20) == Status.FINISHED
        assert claimed == [queued]
        assert tracker.finished == [warm, held, later, queued]
    finally:
        go_on.set()
    # Only the job the pool claimed came back to it.
    assert wait_until(lambda: [m.job_id for m in seen if isinstance(m, WorkerIdle)], 10) == [queued]


def test_jobs_beyond_the_idle_workers_are_queued_and_claimed_in_order(
    make_service: MakeService,
) -> None:
    tracker = Tracker()
    service = make_service([tick_kind("slow", tracker, pool_size=1)])
    warm = warmed(service, "slow", 1)
    claimed = claims_seen(service.store)
    ids = [service.submit("slow", {"ticks": 1, "hold": True}) for _ in range(4)]
    assert tracker.wait_for(lambda: tracker.running == 1)
    assert service.status("slow", ids[1]) == Status.PENDING
    tracker.gate.set()
    for job_id in ids:
        assert service.wait("slow", job_id, 20) == Status.FINISHED
    # The first went to the idle worker; the others waited in the queue, in order.
    assert claimed == ids[1:]
    assert tracker.finished == [warm, *ids]


def test_a_backlog_drains_with_each_worker_claiming_its_next_job_itself(
    make_service: MakeService, database_url: str
) -> None:
    tracker, service, warm, held = held_pool(make_service, 2, database_url=database_url)
    seen = messages_seen(pool_of(service, "slow"))
    claimed = claims_seen(service.store)
    queued = [service.submit("slow", {"ticks": 1}) for _ in range(6)]
    assert {service.status("slow", job_id) for job_id in queued} == {Status.PENDING}
    # The pool read a wake: its queue is not empty, its offer withdrawn.
    wait_until(lambda: slots_of(service, "slow").claim_next, timeout=10)
    tracker.gate.set()
    for job_id in [*held, *queued]:
        assert service.wait("slow", job_id, 20) == Status.FINISHED
    assert sorted(claimed) == queued
    assert sorted(tracker.finished) == [warm, *held, *queued]
    # Each worker tells its pool at most once: when its claim finds the queue empty.
    assert len([m for m in seen if isinstance(m, WorkerIdle)]) <= 2
    assert wait_until(lambda: slots_of(service, "slow").handed_jobs == [], timeout=10)


def test_a_worker_whose_claim_finds_the_queue_empty_leaves_its_pool_no_claim_to_make(
    make_service: MakeService, database_url: str
) -> None:
    tracker, service, warm, held = held_pool(make_service, 2, database_url=database_url)
    pool_claims: list[int] = []  # jobs taken by each claim made in the pool's thread
    claim_many = service.store.claim_many

    def claim(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        rows = claim_many(*args, **kwargs)
        if threading.current_thread().name.startswith(f"{WorkerPool.__name__}-"):
            pool_claims.append(len(rows))
        return rows

    service.store.claim_many = claim  # type: ignore[method-assign]
    queued = [service.submit("slow", {"ticks": 1}) for _ in range(4)]
    wait_until(lambda: slots_of(service, "slow").claim_next, timeout=10)
    tracker.gate.set()
    for job_id in [*held, *queued]:
        assert service.wait("slow", job_id, 20) == Status.FINISHED
    idle_offered(service, "slow", 2)  # the queue is empty again: both workers offered
    assert sorted(tracker.finished) == [warm, *held, *queued]
    # The workers' own claims took the backlog and found its end; the pool's read
    # agreed, and it made no claim that took nothing.
    assert 0 not in pool_claims


def test_submits_queued_before_their_pool_reads_a_wake_wake_it_once(
    make_service: MakeService,
) -> None:
    tracker, service, warm, (held,) = held_pool(make_service, 1)
    go_on = threading.Event()
    seen = messages_seen(pool_of(service, "slow"), until=go_on)
    try:
        queued = [service.submit("slow", {"ticks": 1}) for _ in range(5)]
    finally:
        go_on.set()
    ask(service._pools["slow"], PoolStats(), PoolStatus, 10)  # the wake was read
    queued.append(service.submit("slow", {"ticks": 1}))  # after it: wakes again
    tracker.gate.set()
    for job_id in queued:
        assert service.wait("slow", job_id, 20) == Status.FINISHED
    assert tracker.finished == [warm, held, *queued]
    assert len([m for m in seen if isinstance(m, Wake)]) == 2


def test_a_stop_that_comes_before_a_handed_job_reaches_its_worker_wins(
    make_service: MakeService, database_url: str
) -> None:
    tracker = Tracker()
    service = make_service([tick_kind("quick", tracker, pool_size=1)], database_url=database_url)
    warmed(service, "quick", 1)
    store = service.store
    insert_running = store.insert_running
    asked: list[str] = []

    def insert_then_stop(table: str, values: Any) -> dict[str, Any]:
        row = insert_running(table, values)
        # Between the insert and the message to the worker: the job is running in the
        # database and on no worker yet.
        asked.append(service.stop("quick", int(row["id"])))
        return row

    store.insert_running = insert_then_stop  # type: ignore[method-assign]
    job_id = service.submit("quick", {"ticks": 3})
    assert asked == [Status.RUNNING]
    assert service.wait("quick", job_id, 20) == Status.STOPPED
    assert job_id not in tracker.ticks
    log = Path(service.log_path("quick", job_id)).read_text()
    assert "state stopped (stop requested before it started)" in log
    # The worker kept for it is offered again.
    idle_offered(service, "quick", 1)


def test_a_failed_insert_gives_its_worker_back(make_service: MakeService) -> None:
    tracker = Tracker()
    service = make_service([tick_kind("quick", tracker, pool_size=1)])
    warmed(service, "quick", 1)
    store = service.store
    insert_running = store.insert_running

    def refused(table: str, values: Any) -> dict[str, Any]:
        store.insert_running = insert_running  # type: ignore[method-assign]
        raise OSError("disk full")

    store.insert_running = refused  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk full"):
        service.submit("quick", {"ticks": 1})
    assert store.status_counts("job") == {Status.FINISHED.value: 1}
    assert slots_of(service, "quick").free == 1
    job_id = service.submit("quick", {"ticks": 1})
    assert service.wait("quick", job_id, 20) == Status.FINISHED


def test_a_handed_job_asked_to_stop_as_it_runs_stops_at_its_next_transition(
    make_service: MakeService,
) -> None:
    tracker = Tracker()
    service = make_service([tick_kind("slow", tracker, pool_size=1)])
    warmed(service, "slow", 1)
    claimed = claims_seen(service.store)
    job_id = service.submit("slow", {"ticks": 3, "hold": True})
    assert tracker.wait_for(lambda: tracker.running == 1)
    assert service.stats()["slow"]["busy"] == 1
    assert service.stop("slow", job_id) == Status.RUNNING
    tracker.gate.set()
    assert service.wait("slow", job_id, 20) == Status.STOPPED
    assert claimed == []
    assert tracker.ticks[job_id] == 1  # the first tick ran; the stop won at the next
    idle_offered(service, "slow", 1)


def test_a_job_a_worker_claimed_itself_stops_when_asked(make_service: MakeService) -> None:
    tracker, service, _, (held,) = held_pool(make_service, 1)
    claimed = claims_seen(service.store)
    seen = messages_seen(pool_of(service, "slow"))
    endless = service.submit("slow", {"ticks": 10**9})  # queued
    wait_until(lambda: slots_of(service, "slow").claim_next, timeout=10)
    tracker.gate.set()
    assert service.wait("slow", held, 20) == Status.FINISHED
    assert tracker.wait_for(lambda: tracker.ticks.get(endless, 0) > 0)
    assert claimed == [endless]  # claimed by the worker, with the held job's end
    assert slots_of(service, "slow").handed_jobs == [endless]
    assert service.stop("slow", endless) == Status.RUNNING
    assert service.wait("slow", endless, 20) == Status.STOPPED
    assert wait_until(lambda: slots_of(service, "slow").handed_jobs == [], timeout=10)
    # The pool heard only of the stopped job, its worker's claim after it finding none.
    assert wait_until(lambda: [m.job_id for m in seen if isinstance(m, WorkerIdle)], 10) == [
        endless
    ]


def test_a_job_handed_to_a_worker_that_is_gone_is_queued_and_runs_at_the_next_start(
    make_service: MakeService,
) -> None:
    tracker = Tracker()
    kinds = [tick_kind("quick", tracker, pool_size=1)]
    service = make_service(kinds)
    warm = warmed(service, "quick", 1)
    store = service.store
    insert_running = store.insert_running
    (slot,) = slots_of(service, "quick")._free

    handed: list[int] = []

    def insert_then_worker_gone(table: str, values: Any) -> dict[str, Any]:
        row = insert_running(table, values)
        handed.append(int(row["id"]))
        slot.worker.stop()
        return row

    store.insert_running = insert_then_worker_gone  # type: ignore[method-assign]
    job_id = service.submit("quick", {"ticks": 1})
    assert handed == [job_id]
    assert service.status("quick", job_id) == Status.PENDING
    service.shutdown(10)
    again = JobService(service.settings, kinds).start()
    try:
        assert again.wait("quick", job_id, 20) == Status.FINISHED
    finally:
        again.shutdown()
    assert tracker.finished == [warm, job_id]


def test_an_end_its_worker_cannot_write_is_written_by_the_pool(
    make_service: MakeService,
) -> None:
    tracker = Tracker()
    service = make_service([tick_kind("quick", tracker, pool_size=1)])
    warm = warmed(service, "quick", 1)
    store = service.store
    set_status_soon = store.set_status_soon
    refused: list[str] = []

    def refused_once(table: str, job_id: int, status: str, then: Any, **kwargs: Any) -> None:
        if not refused:
            refused.append(threading.current_thread().name)
            then(OSError("disk I/O error"))
            return
        set_status_soon(table, job_id, status, then, **kwargs)

    store.set_status_soon = refused_once  # type: ignore[method-assign]
    heard: list[tuple[int, str]] = []
    service.add_job_listener(lambda _kind, job_id, status: heard.append((job_id, status)))
    job_id = service.submit("quick", {"ticks": 1})
    assert service.wait("quick", job_id, 20) == Status.FINISHED
    assert wait_until(lambda: heard, timeout=10) == [(job_id, Status.FINISHED)]
    assert len(refused) == 1 and refused[0].startswith("Worker")
    assert tracker.finished == [warm, job_id]
