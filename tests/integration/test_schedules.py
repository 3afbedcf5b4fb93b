"""Schedules: parsing, and firing through the whole engine against real registries.

The firing tests give their schedules one slot a year (:data:`YEARLY`), so that no
slot comes by itself during a test, and move a schedule's next fire time into the past
(what the passing of time does) instead of waiting for the clock; each slot must fire
exactly once: across a restart, across two nodes on one PostgreSQL, and after a
downtime that spans several slots.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import uvicorn
from fastapi.testclient import TestClient
from registries import ImageBuilder, RegistryPair, free_port, push_image
from typer.testing import CliRunner
from waiting import wait_until

from actors import JobService
from actors.cli import app as cli_app
from actors.http import create_app
from model.catalog import Catalog
from model.db import Store
from model.db.tables import Project, ReplicationPolicy, ReplicationTarget, Schedule, utcnow
from model.errors import InvalidRequest
from model.schedules import next_fire, parse

MakeService = Callable[..., JobService]
#: A schedule that never fires by itself during a test.
YEARLY = "0 0 1 1 *"


# -- parsing -------------------------------------------------------------------------------


def test_a_cron_expression_fires_at_its_next_slot_in_its_time_zone() -> None:
    after = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    assert next_fire("0 2 * * *", "UTC", after) == datetime(2026, 3, 29, 2, 0, tzinfo=UTC)
    # 02:30 in Paris on the day after the clocks went forward is 00:30 UTC.
    assert next_fire("30 2 * * *", "Europe/Paris", datetime(2026, 3, 29, 12, 0, tzinfo=UTC)) == (
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC)
    )


def test_harbors_cron_str_form_is_read_as_its_cron_expression() -> None:
    daily = '{"kind":"Scheduled","schedule_param":{"type":"Daily","weekday":0,"offtime":3660}}'
    assert parse(daily, "Europe/Paris") == parse("1 1 * * *", "UTC")
    assert parse('{"type": "Weekly", "weekday": 7, "offtime": 0}').expression == "0 0 * * 0"


@pytest.mark.parametrize(
    ("cron", "timezone", "field"),
    [
        ("every day", "UTC", "schedule"),
        ("0 2 * *", "UTC", "schedule"),
        ("61 2 * * *", "UTC", "schedule"),
        ("0 2 * * *", "Mars/Olympus", "timezone"),
        ('{"type": "Hourly"}', "UTC", "schedule"),
        ("", "UTC", "schedule"),
    ],
)
def test_a_bad_schedule_names_its_field(cron: str, timezone: str, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(cron, timezone)
    assert caught.value.field == field


# -- firing ---------------------------------------------------------------------------------


def _policy(store: Store, target_url: str) -> int:
    project = store.add(Project(name="library"))
    target = store.add(ReplicationTarget(name="dr", url=target_url))
    assert project.id is not None and target.id is not None
    policy = store.add(ReplicationPolicy(project_id=project.id, target_id=target.id, name="p"))
    assert policy.id is not None
    return policy.id


def _make_due(store: Store, schedule_id: int, ago: timedelta = timedelta(seconds=1)) -> None:
    """The passing of time: the schedule's next slot is now ``ago`` in the past."""
    store.update(Schedule, schedule_id, next_fire_at=utcnow() - ago)


def _jobs(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM replication_job")).scalar_one())


@pytest.fixture
def source_with_two_repositories(registry_pair: RegistryPair, images: ImageBuilder) -> str:
    for repository in ("library/app", "library/db"):
        push_image(images, images.docker_image(), registry_pair.source.host, repository, "v1")
    return registry_pair.source.url


def test_a_policy_schedule_fires_each_slot_once_across_a_restart(
    make_service: MakeService, registry_pair: RegistryPair, source_with_two_repositories: str
) -> None:
    settings = {"registry_url": source_with_two_repositories, "poll_interval": 0.2}
    service = make_service(**settings)
    store = service.store
    policy = _policy(store, registry_pair.target.url)
    triggers = Catalog(store, service.box).set_triggers(policy, schedule=YEARLY)
    assert triggers.next_fire_at is not None
    (schedule,) = store.list_rows(Schedule)
    assert schedule.id is not None

    _make_due(store, schedule.id)
    wait_until(lambda: _jobs(store) == 2, timeout=30)  # one job per repository
    after_first = store.get(Schedule, schedule.id)
    assert after_first.next_fire_at is not None
    assert after_first.next_fire_at.replace(tzinfo=UTC) > utcnow()

    service.shutdown(10)
    again = make_service(**settings)
    # The slot fired before the restart does not fire again after it.
    wait_until(lambda: again.nodes()[0]["age_s"] >= 0 and _scheduler_looked(again), timeout=10)
    assert _jobs(again.store) == 2
    _make_due(again.store, schedule.id)
    wait_until(lambda: _jobs(again.store) == 4, timeout=30)


def _scheduler_looked(service: JobService) -> bool:
    """The service has polled at least twice since its start (each poll fires what is
    due)."""
    rows = service.nodes()
    own = next(row for row in rows if row["self"])
    return bool((utcnow() - own["started"]).total_seconds() > 3 * service.settings.poll_interval)


def test_a_schedule_missed_during_a_downtime_fires_once_at_start(
    make_service: MakeService, registry_pair: RegistryPair, source_with_two_repositories: str
) -> None:
    settings = {"registry_url": source_with_two_repositories, "poll_interval": 0.2}
    service = make_service(**settings)
    store = service.store
    policy = _policy(store, registry_pair.target.url)
    Catalog(store, service.box).set_triggers(policy, schedule=YEARLY)
    (schedule,) = store.list_rows(Schedule)
    assert schedule.id is not None
    service.shutdown(10)
    # Three minutes of downtime: three slots passed.
    _make_due(store, schedule.id, timedelta(minutes=3))

    again = make_service(**settings)
    wait_until(lambda: _jobs(again.store) == 2, timeout=30)
    wait_until(lambda: _scheduler_looked(again), timeout=10)
    assert _jobs(again.store) == 2  # once, not once per missed slot
    row = again.store.get(Schedule, schedule.id)
    assert row.next_fire_at is not None and row.next_fire_at.replace(tzinfo=UTC) > utcnow()


@pytest.mark.parametrize("server", ["postgres", "mariadb"])
def test_a_slot_fires_on_exactly_one_of_two_nodes_on_postgresql_and_mariadb(
    make_service: MakeService,
    registry_pair: RegistryPair,
    source_with_two_repositories: str,
    server: str,
    request: pytest.FixtureRequest,
) -> None:
    settings = {
        "registry_url": source_with_two_repositories,
        "database_url": request.getfixturevalue(server).new_database(),
        "poll_interval": 0.1,
    }
    a = make_service(**settings)
    b = make_service(**settings)
    store = a.store
    policy = _policy(store, registry_pair.target.url)
    Catalog(store, a.box).set_triggers(policy, schedule=YEARLY)
    (schedule,) = store.list_rows(Schedule)
    assert schedule.id is not None
    for fired in (2, 4, 6):
        _make_due(store, schedule.id)
        wait_until(lambda fired=fired: _jobs(store) == fired, timeout=30)  # type: ignore[misc]
        wait_until(lambda: _scheduler_looked(a) and _scheduler_looked(b), timeout=10)
    assert _jobs(b.store) == 6


def test_a_scan_schedule_scans_every_tag_of_the_matching_repositories(
    make_service: MakeService, registry_pair: RegistryPair, images: ImageBuilder
) -> None:
    source = registry_pair.source
    for repository, tag in (("library/app", "v1"), ("library/app", "v2"), ("other/x", "v1")):
        push_image(images, images.docker_image(), source.host, repository, tag)
    service = make_service(registry_url=source.url, poll_interval=0.2)
    store = service.store
    schedule = Catalog(store, service.box).add_scan_schedule("library/*", YEARLY, "UTC")
    assert schedule.id is not None
    _make_due(store, schedule.id)

    def scans() -> list[tuple[str, str]]:
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT repository, tag FROM img_scan_job ORDER BY tag"))
            return [(str(r), str(t)) for r, t in rows]

    wait_until(lambda: len(scans()) == 2, timeout=30)
    assert scans() == [("library/app", "v1"), ("library/app", "v2")]


# -- through the HTTP API -------------------------------------------------------------------


def test_a_policys_triggers_are_set_read_and_removed_over_http(
    make_service: MakeService,
) -> None:
    service = make_service(ui_secret="s3cret")
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        client.cookies.set("secret", "s3cret")
        project = client.post("/api/projects", json={"name": "library"}).json()
        target = client.post("/api/targets", json={"name": "dr", "url": "http://dr:5000"}).json()
        base = {"name": "nightly", "project_id": project["id"], "target_id": target["id"]}

        bad = client.post("/api/policies/replication", json={**base, "schedule": "0 25 * * *"})
        assert bad.status_code == 400 and bad.json()["field"] == "schedule"
        bad = client.post(
            "/api/policies/replication",
            json={**base, "schedule": "0 2 * * *", "timezone": "Mars/Olympus"},
        )
        assert bad.status_code == 400 and bad.json()["field"] == "timezone"
        assert client.get("/api/policies/replication").json() == []  # nothing written

        made = client.post(
            "/api/policies/replication",
            json={**base, "schedule": "0 2 * * *", "timezone": "Europe/Paris", "on_push": True},
        )
        assert made.status_code == 201, made.text
        policy = made.json()
        assert (policy["schedule"], policy["timezone"], policy["on_push"]) == (
            "0 2 * * *",
            "Europe/Paris",
            True,
        )
        assert policy["on_delete"] is False and policy["next_fire_at"] is not None
        listed = client.get("/api/schedules").json()
        assert [(s["kind"], s["policy_id"], s["schedule"]) for s in listed] == [
            ("replication", policy["id"], "0 2 * * *")
        ]

        changed = client.put(
            f"/api/policies/replication/{policy['id']}",
            json={"schedule": "", "on_delete": True},
        ).json()
        assert changed["schedule"] is None and changed["on_push"] and changed["on_delete"]
        assert client.get("/api/schedules").json() == []


def test_scan_schedules_are_added_listed_and_deleted_over_http(make_service: MakeService) -> None:
    service = make_service(ui_secret="s3cret")
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        client.cookies.set("secret", "s3cret")
        bad = client.post("/api/schedules/scan", json={"pattern": "*/app", "schedule": "0 2 * * *"})
        assert bad.status_code == 400 and bad.json()["field"] == "pattern"
        made = client.post(
            "/api/schedules/scan", json={"pattern": "library/*", "schedule": "30 1 * * 0"}
        )
        assert made.status_code == 201, made.text
        schedule = made.json()
        assert (schedule["kind"], schedule["pattern"], schedule["timezone"]) == (
            "scan",
            "library/*",
            "UTC",
        )
        assert client.delete(f"/api/schedules/{schedule['id']}").status_code == 204
        assert client.get("/api/schedules").json() == []
        assert client.delete(f"/api/schedules/{schedule['id']}").status_code == 404


# -- through the CLI ------------------------------------------------------------------------


def test_the_cli_adds_a_policy_with_its_triggers_and_lists_what_fires_next(
    make_service: MakeService,
) -> None:
    service = make_service(ui_secret="s3cret")
    catalog = Catalog(service.store, service.box)
    catalog.add_project("library", public=False)
    catalog.add_target("dr", "http://dr:5000", "", "", False)
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), port=free_port(), log_config=None, lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=10)
    env = {
        "JOBSERVICE_URL": f"http://127.0.0.1:{server.config.port}",
        "JOBSERVICE_SECRET": "s3cret",
    }
    try:
        runner = CliRunner()
        added = runner.invoke(
            cli_app,
            [
                "policy",
                "add",
                "nightly",
                "--project",
                "library",
                "--target",
                "dr",
                "--schedule",
                "0 2 * * *",
                "--timezone",
                "Europe/Paris",
                "--on-push",
            ],
            env=env,
        )
        assert added.exit_code == 0, added.output
        listed = runner.invoke(cli_app, ["policy", "list"], env=env)
        assert listed.exit_code == 0 and "on push" in listed.output, listed.output
        (policy,) = json.loads(runner.invoke(cli_app, ["policy", "list", "--json"], env=env).output)
        assert (policy["schedule"], policy["timezone"], policy["on_push"]) == (
            "0 2 * * *",
            "Europe/Paris",
            True,
        )
        scan = runner.invoke(
            cli_app, ["schedule", "add-scan", "library/*", "--schedule", "30 1 * * 0"], env=env
        )
        assert scan.exit_code == 0, scan.output
        bad = runner.invoke(
            cli_app, ["schedule", "add-scan", "library/*", "--schedule", "soon"], env=env
        )
        assert bad.exit_code != 0 and "schedule" in bad.output
        shown = runner.invoke(cli_app, ["schedules"], env=env)
        assert shown.exit_code == 0 and "library/*" in shown.output, shown.output
        listed_json = runner.invoke(cli_app, ["schedules", "--json"], env=env).output
        # The next to fire first: Sunday 01:30 UTC comes before 02:00 Paris only on some
        # days, so the order is checked against the answer's own times.
        rows = json.loads(listed_json)
        assert [row["next_fire_at"] for row in rows] == sorted(row["next_fire_at"] for row in rows)
        assert {row["kind"] for row in rows} == {"replication", "scan"}
    finally:
        server.should_exit = True
        thread.join(10)
