"""The HTTP API in-process (FastAPI's TestClient) over a started JobService, on SQLite and
on a real PostgreSQL server: every route, auth, bad input, secrets, and a schemathesis
run against the OpenAPI document."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from loguru import logger
from registries import ImageBuilder, RegistryServer, free_port, push_image
from waiting import wait_until

from actors import JobService
from actors.http import create_app
from actors.http.routes.notifications import OWN_AUTH_PATHS
from model.db.tables import ImgScanOverview, ReplicationTarget, ScanFinding
from model.errors import ConfigError
from model.joblog import job_log_path
from model.settings import Settings
from model.status import Status

SECRET = "api-test-secret"
PASSWORD = "hunter2-target-password"
DIGEST = "sha256:" + "ab" * 32

needs_registry = pytest.mark.skipif(
    shutil.which("docker-registry") is None or shutil.which("skopeo") is None,
    reason="needs docker-registry and skopeo",
)


def repositories_of(project: str) -> list[str]:
    return [f"{project}/app", f"{project}/web"]


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite, or a fresh PostgreSQL database for tests marked :data:`ON_BOTH`."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return f"sqlite:///{tmp_path}/api.db"
    return str(request.getfixturevalue("postgres").new_database())


#: Runs a test that reaches the database on SQLite and on PostgreSQL.
ON_BOTH = pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def start_service(
    make_settings: Callable[..., Settings], database: str
) -> Iterator[Callable[..., JobService]]:
    started: list[JobService] = []

    def start(**values: Any) -> JobService:
        base: dict[str, Any] = {
            "database_url": database,
            "ui_secret": SECRET,
            # Nothing listens there: replications retry, far in the future.
            "registry_url": f"http://127.0.0.1:{free_port()}",
            "retry_delay": 600,
            "retry_delay_max": 600,
        }
        base.update(values)
        service = JobService(make_settings(**base), list_repositories=repositories_of)
        started.append(service.start())
        return service

    yield start
    for service in started:
        service.shutdown(10)


@pytest.fixture
def service(start_service: Callable[..., JobService]) -> JobService:
    return start_service()


@pytest.fixture
def app(service: JobService) -> FastAPI:
    return create_app(service)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        client.cookies.set("secret", SECRET)
        yield client


@pytest.fixture
def policy(client: TestClient) -> dict[str, Any]:
    project = client.post("/api/projects", json={"name": "library"}).json()
    target = client.post(
        "/api/targets",
        json={"name": "dr", "url": f"http://127.0.0.1:{free_port()}", "username": "robot"},
    ).json()
    answer = client.post(
        "/api/policies/replication",
        json={"name": "to-dr", "project_id": project["id"], "target_id": target["id"]},
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def assert_error(response: httpx.Response, code: int, field: str | None) -> dict[str, Any]:
    assert response.status_code == code, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code and body["message"]
    if field is not None:
        assert body["field"] == field, body
    return body


# -- auth ------------------------------------------------------------------------------------


def protected_routes(app: FastAPI) -> list[tuple[str, str]]:
    found = []
    for path, operations in app.openapi()["paths"].items():
        if not path.startswith("/api/") or path in OWN_AUTH_PATHS:
            continue  # the registry's notifications carry a bearer token instead
        concrete = path.replace("{digest}", DIGEST).replace("{kind}", "replication")
        concrete = concrete.replace("{id}", "1")
        found += [(method.upper(), concrete) for method in operations]
    return found


def test_every_api_route_needs_the_secret_cookie_401_when_missing_403_when_wrong(
    app: FastAPI,
) -> None:
    routes = protected_routes(app)
    assert len(routes) >= 25
    with TestClient(app, raise_server_exceptions=False) as anonymous:
        for method, path in routes:
            assert_error(anonymous.request(method, path, json={}), 401, "secret")
        anonymous.cookies.set("secret", SECRET + "x")
        for method, path in routes:
            assert_error(anonymous.request(method, path, json={}), 403, "secret")


def test_healthz_metrics_and_the_openapi_document_need_no_secret(app: FastAPI) -> None:
    with TestClient(app) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        assert "jobservice_up 1.0" in anonymous.get("/metrics").text
        assert anonymous.get("/openapi.json").json()["info"]["title"] == "jobservice"


def test_the_secret_is_compared_in_constant_time(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import actors.http.middleware

    compared: list[tuple[bytes, bytes]] = []
    real = actors.http.middleware.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(actors.http.middleware.hmac, "compare_digest", spy)
    assert client.get("/api/stats").status_code == 200
    assert compared == [(SECRET.encode(), SECRET.encode())]


def test_the_api_refuses_to_run_without_a_ui_secret(
    start_service: Callable[..., JobService],
) -> None:
    with pytest.raises(ConfigError, match="ui_secret"):
        create_app(start_service(ui_secret=None))


# -- the original's routes -------------------------------------------------------------------


@ON_BOTH
def test_replication_of_one_repository_queues_one_transfer_job_with_its_tags(
    client: TestClient, policy: dict[str, Any]
) -> None:
    answer = client.post(
        "/api/jobs/replication",
        json={"policy_id": policy["id"], "repository": "library/app", "tags": ["v1", "v2"]},
    )
    assert answer.status_code == 200, answer.text
    (job_id,) = answer.json()["job_ids"]
    job = client.get(f"/api/jobs/replication/{job_id}").json()
    assert job["kind"] == "replication"
    assert job["status"] in {"pending", "running", "retrying"}
    assert job["parameters"] == {
        "repository": "library/app",
        "policy_id": policy["id"],
        "operation": "transfer",
        "tags": ["v1", "v2"],
    }


@ON_BOTH
def test_replication_without_a_repository_queues_one_transfer_per_repository_of_the_project(
    client: TestClient, policy: dict[str, Any]
) -> None:
    answer = client.post("/api/jobs/replication", json={"policy_id": policy["id"]})
    assert answer.status_code == 200, answer.text
    ids = answer.json()["job_ids"]
    jobs = [client.get(f"/api/jobs/replication/{i}").json()["parameters"] for i in ids]
    assert [j["repository"] for j in jobs] == ["library/app", "library/web"]
    assert {j["operation"] for j in jobs} == {"transfer"}


def test_replication_of_an_unknown_policy_is_404_naming_the_policy(client: TestClient) -> None:
    body = assert_error(
        client.post("/api/jobs/replication", json={"policy_id": 4242}), 404, "policy_id"
    )
    assert "4242" in body["message"]


@ON_BOTH
def test_the_stop_action_stops_the_policys_waiting_jobs_and_other_actions_are_400(
    client: TestClient, policy: dict[str, Any], service: JobService
) -> None:
    (job_id,) = client.post(
        "/api/jobs/replication", json={"policy_id": policy["id"], "repository": "library/app"}
    ).json()["job_ids"]
    # The target does not answer: the job waits in retrying, due in ten minutes.
    wait_until(lambda: service.status("replication", job_id) == Status.RETRYING)
    answer = client.post(
        "/api/jobs/replication/actions", json={"policy_id": policy["id"], "action": "stop"}
    )
    assert answer.status_code == 200 and answer.json() == {"job_ids": [job_id]}
    assert service.status("replication", job_id) == Status.STOPPED
    body = assert_error(
        client.post(
            "/api/jobs/replication/actions", json={"policy_id": policy["id"], "action": "start"}
        ),
        400,
        "action",
    )
    assert "'stop'" in body["message"] and "'start'" in body["message"]
    # The original answers a stop of an unknown policy 200, with nothing stopped.
    unknown = client.post(
        "/api/jobs/replication/actions", json={"policy_id": 999, "action": "stop"}
    )
    assert unknown.status_code == 200 and unknown.json() == {"job_ids": []}


def test_job_logs_are_plain_text_from_an_offset_and_404_without_a_log(
    client: TestClient, policy: dict[str, Any], service: JobService
) -> None:
    (job_id,) = client.post(
        "/api/jobs/replication", json={"policy_id": policy["id"], "repository": "library/app"}
    ).json()["job_ids"]
    wait_until(lambda: service.status("replication", job_id) == Status.RETRYING)
    log = client.get(f"/api/jobs/replication/{job_id}/log")
    assert log.status_code == 200
    assert log.headers["content-type"].startswith("text/plain")
    assert "state running" in log.text
    assert log.content == Path(service.log_path("replication", job_id)).read_bytes()
    rest = client.get(f"/api/jobs/replication/{job_id}/log", params={"offset": 10})
    assert rest.content == log.content[10:]
    past = client.get(f"/api/jobs/replication/{job_id}/log", params={"offset": 10**9})
    assert past.status_code == 200 and past.content == b""
    assert_error(client.get("/api/jobs/replication/77/log"), 404, "id")
    assert_error(client.get("/api/jobs/scan/77/log"), 404, "id")
    assert_error(client.get("/api/jobs/replication/abc/log"), 400, "id")
    assert_error(client.get("/api/jobs/scan/1.5/log"), 400, "id")
    assert_error(client.get("/api/jobs/scan/-3/log"), 400, "id")


def test_a_scan_log_is_read_from_the_scan_job_folder(
    client: TestClient, service: JobService
) -> None:
    path = Path(job_log_path(Path(service.settings.log_dir) / "scan_job", 1234567))
    path.parent.mkdir(parents=True)
    path.write_text("scanned\n")
    assert client.get("/api/jobs/scan/1234567/log").text == "scanned\n"
    assert_error(client.get("/api/jobs/replication/1234567/log"), 404, "id")


@ON_BOTH
@needs_registry
def test_a_scan_is_queued_for_an_image_in_the_registry_and_404_for_one_that_is_not(
    start_service: Callable[..., JobService], registry: RegistryServer, images: ImageBuilder
) -> None:
    digest = push_image(images, images.docker_image((512,)), registry.host, "library/app", "v1")
    service = start_service(registry_url=registry.url)
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        client.cookies.set("secret", SECRET)
        answer = client.post("/api/jobs/scan", json={"repository": "library/app", "tag": "v1"})
        assert answer.status_code == 200, answer.text
        job_id = answer.json()["job_id"]
        job = client.get(f"/api/jobs/scan/{job_id}").json()
        assert job["parameters"] == {"repository": "library/app", "tag": "v1", "digest": digest}
        body = assert_error(
            client.post("/api/jobs/scan", json={"repository": "library/app", "tag": "v2"}),
            404,
            "tag",
        )
        assert "library/app:v2" in body["message"]
        assert_error(
            client.post("/api/jobs/scan", json={"repository": "Library/App", "tag": "v1"}),
            400,
            "repository",
        )


def test_a_scan_with_the_registry_down_is_502_naming_the_registry(client: TestClient) -> None:
    body = assert_error(
        client.post("/api/jobs/scan", json={"repository": "library/app", "tag": "v1"}), 502, None
    )
    assert "registry" in body["message"]


# -- jobs ------------------------------------------------------------------------------------


@ON_BOTH
def test_a_job_shows_status_attempts_times_parameters_and_last_log_line_and_can_be_stopped(
    client: TestClient, policy: dict[str, Any], service: JobService
) -> None:
    (job_id,) = client.post(
        "/api/jobs/replication", json={"policy_id": policy["id"], "repository": "library/app"}
    ).json()["job_ids"]
    wait_until(lambda: service.status("replication", job_id) == Status.RETRYING)
    job = client.get(f"/api/jobs/replication/{job_id}").json()
    assert job["status"] == "retrying" and job["attempts"] == 1
    assert job["next_attempt_at"] > job["creation_time"]
    assert "retry" in job["progress"]
    stopped = client.post(f"/api/jobs/replication/{job_id}/stop")
    assert stopped.json() == {"id": job_id, "kind": "replication", "status": "retrying"}
    assert client.get(f"/api/jobs/replication/{job_id}").json()["status"] == "stopped"
    assert_error(client.get("/api/jobs/replication/999"), 404, "id")
    assert_error(client.post("/api/jobs/scan/999/stop"), 404, "id")
    assert_error(client.get("/api/jobs/nosuchkind/1"), 404, "kind")
    assert_error(client.get("/api/jobs/Bad Kind/1"), 400, "kind")


@ON_BOTH
def test_an_image_scan_shows_its_overview_and_findings(
    client: TestClient, service: JobService
) -> None:
    assert_error(client.get(f"/api/images/{DIGEST}/scan"), 404, "digest")
    assert_error(client.get("/api/images/sha256:xyz/scan"), 400, "digest")
    service.store.save_scan_result(
        ImgScanOverview(
            image_digest=DIGEST,
            scan_job_id=7,
            severity=4,
            components_overview=json.dumps({"total": 3, "summary": [{"severity": 4, "count": 1}]}),
            details_key="key",
        ),
        [
            ScanFinding(
                image_digest=DIGEST,
                scan_job_id=7,
                vulnerability_id="CVE-2024-0001",
                package="openssl",
                version="3.0.1",
                fixed_version="3.0.2",
                severity=4,
            )
        ],
    )
    scan = client.get(f"/api/images/{DIGEST}/scan").json()
    assert scan["severity"] == 4 and scan["scan_job_id"] == 7
    assert scan["components_overview"]["total"] == 3
    assert [f["vulnerability_id"] for f in scan["findings"]] == ["CVE-2024-0001"]


def test_stats_report_each_pool_and_healthz_is_ok(client: TestClient) -> None:
    stats = client.get("/api/stats").json()
    assert set(stats) == {"replication", "scan"}
    assert stats["replication"] == {
        "size": 3,
        "busy": 0,
        "running": [],
        "queued": 0,
        "delayed": 0,
        "unrecorded": 0,
        "claim_failing": False,
        "statuses": {},
    }
    assert client.get("/healthz").status_code == 200


@ON_BOTH
def test_metrics_count_jobs_by_kind_and_status_and_time_the_ones_that_ended(
    client: TestClient, policy: dict[str, Any], service: JobService
) -> None:
    (job_id,) = client.post(
        "/api/jobs/replication", json={"policy_id": policy["id"], "repository": "library/app"}
    ).json()["job_ids"]
    wait_until(lambda: service.status("replication", job_id) == Status.RETRYING)
    text = client.get("/metrics").text
    assert 'jobservice_jobs{kind="replication",status="retrying"} 1.0' in text
    assert 'jobservice_jobs_delayed{kind="replication"} 1.0' in text
    assert 'jobservice_workers{kind="scan"} 3.0' in text
    assert 'jobservice_workers_busy{kind="replication"} 0.0' in text
    assert "jobservice_replication_bytes_sent_total 0.0" in text
    client.post(f"/api/jobs/replication/{job_id}/stop")
    text = client.get("/metrics").text
    assert 'jobservice_job_duration_seconds_count{kind="replication",status="stopped"} 1.0' in text
    counted = 'code="200",method="POST",route="/api/jobs/replication"'
    assert f"jobservice_http_requests_total{{{counted}}} 1.0" in text


def test_healthz_turns_503_when_the_actor_system_dies(
    client: TestClient, service: JobService
) -> None:
    dispatcher = service._dispatcher
    assert dispatcher is not None
    dispatcher.stop()
    answer = client.get("/healthz")
    assert answer.status_code == 503 and answer.json()["status"] == "unavailable"
    assert "actor system" in answer.json()["cause"]
    assert "jobservice_up 0.0" in client.get("/metrics").text


# -- projects, targets, policies ---------------------------------------------------------------


@ON_BOTH
def test_projects_are_listed_created_read_updated_and_deleted(client: TestClient) -> None:
    created = client.post("/api/projects", json={"name": "library"})
    assert created.status_code == 201
    project = created.json()
    assert project == {"id": project["id"], "name": "library", "public": False, "auto_scan": False}
    assert client.get("/api/projects").json() == [project]
    assert client.get(f"/api/projects/{project['id']}").json() == project
    updated = client.put(f"/api/projects/{project['id']}", json={"public": True}).json()
    assert updated == {**project, "public": True}
    assert client.delete(f"/api/projects/{project['id']}").status_code == 204
    assert_error(client.get(f"/api/projects/{project['id']}"), 404, "id")
    assert client.get("/api/projects").json() == []


@ON_BOTH
def test_targets_are_listed_created_read_updated_and_deleted_without_their_password(
    client: TestClient, service: JobService
) -> None:
    created = client.post(
        "/api/targets",
        json={
            "name": "dr",
            "url": "https://dr.example.com:5000/",
            "username": "robot",
            "password": PASSWORD,
        },
    )
    assert created.status_code == 201, created.text
    target = created.json()
    assert target["url"] == "https://dr.example.com:5000"
    assert target["has_password"] is True and "password" not in target
    stored = service.store.get(ReplicationTarget, target["id"])
    assert PASSWORD not in stored.password and service.box.decrypt(stored.password) == PASSWORD
    renamed = client.put(f"/api/targets/{target['id']}", json={"name": "dr2", "insecure": True})
    assert renamed.json()["name"] == "dr2" and renamed.json()["insecure"] is True
    assert service.box.decrypt(service.store.get(ReplicationTarget, target["id"]).password) == (
        PASSWORD
    )
    cleared = client.put(f"/api/targets/{target['id']}", json={"password": ""}).json()
    assert cleared["has_password"] is False
    assert [t["name"] for t in client.get("/api/targets").json()] == ["dr2"]
    assert client.delete(f"/api/targets/{target['id']}").status_code == 204
    assert_error(client.delete(f"/api/targets/{target['id']}"), 404, "id")


@ON_BOTH
def test_policies_are_listed_created_read_updated_and_deleted(
    client: TestClient, policy: dict[str, Any]
) -> None:
    assert policy["enabled"] is True and policy["replicate_deletion"] is False
    assert client.get("/api/policies/replication").json() == [policy]
    updated = client.put(
        f"/api/policies/replication/{policy['id']}",
        json={"description": "nightly", "enabled": False},
    ).json()
    assert updated["description"] == "nightly" and updated["enabled"] is False
    assert_error(
        client.put(f"/api/policies/replication/{policy['id']}", json={"project_id": 999}),
        404,
        "project_id",
    )
    assert_error(
        client.post(
            "/api/policies/replication",
            json={"name": "x", "project_id": policy["project_id"], "target_id": 999},
        ),
        404,
        "target_id",
    )
    assert client.delete(f"/api/policies/replication/{policy['id']}").status_code == 204
    assert_error(client.get(f"/api/policies/replication/{policy['id']}"), 404, "id")
    assert client.get("/api/policies/replication").json() == []
    assert_error(
        client.post("/api/jobs/replication", json={"policy_id": policy["id"]}), 404, "policy_id"
    )


@ON_BOTH
def test_names_are_unique_409_naming_the_name(client: TestClient, policy: dict[str, Any]) -> None:
    assert_error(client.post("/api/projects", json={"name": "library"}), 409, "name")
    assert_error(
        client.post("/api/targets", json={"name": "dr", "url": "http://other:5000"}), 409, "name"
    )
    same = {"name": "to-dr", "project_id": policy["project_id"], "target_id": policy["target_id"]}
    assert_error(client.post("/api/policies/replication", json=same), 409, "name")
    other = client.post("/api/projects", json={"name": "other"}).json()
    assert_error(client.put(f"/api/projects/{other['id']}", json={"name": "library"}), 409, "name")
    assert client.put(f"/api/projects/{other['id']}", json={"name": "other"}).status_code == 200


@ON_BOTH
def test_rows_in_use_are_not_deleted_409(
    client: TestClient, policy: dict[str, Any], service: JobService
) -> None:
    assert_error(client.delete(f"/api/projects/{policy['project_id']}"), 409, "id")
    assert_error(client.delete(f"/api/targets/{policy['target_id']}"), 409, "id")
    (job_id,) = client.post(
        "/api/jobs/replication", json={"policy_id": policy["id"], "repository": "library/app"}
    ).json()["job_ids"]
    body = assert_error(client.delete(f"/api/policies/replication/{policy['id']}"), 409, "id")
    assert str(job_id) in body["message"]
    wait_until(lambda: service.status("replication", job_id) == Status.RETRYING)
    service.stop("replication", job_id)
    assert client.delete(f"/api/policies/replication/{policy['id']}").status_code == 204
    assert client.delete(f"/api/targets/{policy['target_id']}").status_code == 204


@pytest.mark.parametrize(
    "url",
    [
        "ftp://registry.example.com",
        "registry.example.com:5000",
        "http://",
        "https://user:pw@registry.example.com",
        "https://registry.example.com/?x=1",
        "https://registry.example.com/#frag",
        "http://registry.example.com:99999",
        "http://registry example.com",
        "",
    ],
)
def test_target_urls_must_be_http_or_https_with_a_host_and_no_user_info(
    client: TestClient, url: str
) -> None:
    assert_error(client.post("/api/targets", json={"name": "t", "url": url}), 400, "url")


@ON_BOTH
def test_a_target_password_appears_in_no_answer_and_no_log(
    client: TestClient, policy: dict[str, Any], service: JobService
) -> None:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG")
    try:
        target = client.post(
            "/api/targets",
            json={
                "name": "secret-dr",
                "url": "http://127.0.0.1:1",
                "username": "u",
                "password": PASSWORD,
            },
        ).json()
        answers = [
            client.get("/api/targets"),
            client.get(f"/api/targets/{target['id']}"),
            client.put(f"/api/targets/{target['id']}", json={"password": PASSWORD}),
            client.post(
                "/api/targets", json={"name": "secret-dr", "url": "http://h", "password": PASSWORD}
            ),
            client.post(
                "/api/targets", json={"name": "bad", "url": "ftp://h", "password": PASSWORD}
            ),
            client.post(
                "/api/targets",
                json={"name": "bad", "url": "http://h", "password": PASSWORD, "extra": PASSWORD},
            ),
        ]
        policy_id = client.post(
            "/api/policies/replication",
            json={"name": "secret", "project_id": policy["project_id"], "target_id": target["id"]},
        ).json()["id"]
        (job_id,) = client.post(
            "/api/jobs/replication", json={"policy_id": policy_id, "repository": "library/app"}
        ).json()["job_ids"]
        wait_until(lambda: service.status("replication", job_id) in {"retrying", "error"})
        answers.append(client.get(f"/api/jobs/replication/{job_id}"))
        answers.append(client.get(f"/api/jobs/replication/{job_id}/log"))
    finally:
        logger.remove(sink)
    for answer in answers:
        assert PASSWORD not in answer.text
    assert lines and not [line for line in lines if PASSWORD in line]
    assert PASSWORD not in Path(service.log_path("replication", job_id)).read_text()


# -- bad input ---------------------------------------------------------------------------------

BAD_INPUT = [
    ("malformed JSON", "POST", "/api/jobs/replication", b'{"policy_id": 1', 400, "body"),
    ("not an object", "POST", "/api/jobs/replication", b"[1, 2]", 400, "body"),
    ("no body", "POST", "/api/projects", b"", 400, "body"),
    ("wrong type", "POST", "/api/jobs/replication", {"policy_id": "1"}, 400, "policy_id"),
    ("float id", "POST", "/api/jobs/replication", {"policy_id": 1.5}, 400, "policy_id"),
    ("bool id", "POST", "/api/jobs/replication", {"policy_id": True}, 400, "policy_id"),
    ("negative id", "POST", "/api/jobs/replication", {"policy_id": -1}, 400, "policy_id"),
    ("huge id", "POST", "/api/jobs/replication", {"policy_id": 2**63}, 400, "policy_id"),
    ("unknown field", "POST", "/api/projects", {"name": "a", "x": 1}, 400, "x"),
    ("missing field", "POST", "/api/jobs/scan", {"repository": "a/b"}, 400, "tag"),
    (
        "bad operation",
        "POST",
        "/api/jobs/replication",
        {"policy_id": 1, "operation": "copy"},
        400,
        "operation",
    ),
    (
        "bad tag",
        "POST",
        "/api/jobs/replication",
        {"policy_id": 1, "repository": "a/b", "tags": ["ok", "no tag"]},
        400,
        "tags[1]",
    ),
    (
        "tags not a list",
        "POST",
        "/api/jobs/replication",
        {"policy_id": 1, "repository": "a/b", "tags": "v1"},
        400,
        "tags",
    ),
    (
        "bad repository",
        "POST",
        "/api/jobs/scan",
        {"repository": "A//b", "tag": "v1"},
        400,
        "repository",
    ),
    ("NUL in a name", "POST", "/api/targets", {"name": "a\u0000b", "url": "http://h"}, 400, "name"),
    ("long name", "POST", "/api/projects", {"name": "a" * 256}, 400, "name"),
    ("negative path id", "GET", "/api/projects/-1", None, 400, "id"),
    ("huge path id", "GET", "/api/projects/99999999999999999999", None, 400, "id"),
    ("text path id", "DELETE", "/api/targets/one", None, 400, "id"),
    ("negative offset", "GET", "/api/jobs/scan/1/log?offset=-1", None, 400, "offset"),
    ("bad bool", "PUT", "/api/projects/1", {"public": "yes"}, 400, "public"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "field"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
def test_bad_input_gets_a_4xx_json_answer_naming_the_field(
    client: TestClient, method: str, path: str, body: Any, code: int, field: str
) -> None:
    if isinstance(body, bytes):
        answer = client.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
    else:
        answer = client.request(method, path, json=body)
    assert_error(answer, code, field)


def test_a_body_over_the_limit_is_413_whether_its_length_is_declared_or_not(
    client: TestClient, service: JobService
) -> None:
    limit = service.settings.max_body_bytes
    big = b'{"name": "' + b"a" * limit + b'"}'
    assert_error(
        client.post("/api/projects", content=big, headers={"content-type": "application/json"}),
        413,
        "body",
    )

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    assert_error(
        client.post(
            "/api/projects", content=chunks(), headers={"content-type": "application/json"}
        ),
        413,
        "body",
    )
    assert client.post("/api/projects", json={"name": "fits"}).status_code == 201


# -- the OpenAPI document, checked by schemathesis -------------------------------------------------

schemathesis = pytest.importorskip("schemathesis")
import jsonschema_rs  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
)

from actors.http.schemas._fields import MAX_PASSWORD_BYTES  # noqa: E402

#: Examples per operation and mode: the whole run stays within a minute or so.
EXAMPLES = 10
#: (method, path, mode) of every operation of the document (read from an app over a
#: service never started); negative input only where an operation takes some.
CASES = [
    (method.upper(), path, mode)
    for path, item in create_app(JobService(Settings(ui_secret=SECRET))).openapi()["paths"].items()
    for method, operation in item.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE
    or operation.get("parameters")
    or operation.get("requestBody")
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzzed_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, FastAPI]]:
    """One service and app per database for every schemathesis case (their start is
    most of a case's time), with a real registry behind the scan route."""
    root = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    url = (
        f"sqlite:///{root}/api.db"
        if request.param == "sqlite"
        else str(request.getfixturevalue("postgres").new_database())
    )
    registry = RegistryServer(root / "registry")
    registry.start()
    service = JobService(
        Settings(
            database_url=url,
            log_dir=root / "logs",
            key_path=root / "key",
            ui_secret=SECRET,
            registry_url=registry.url,
            retry_delay=600,
            retry_delay_max=600,
        ),
        list_repositories=repositories_of,
    ).start()
    yield request.param, create_app(service)
    service.shutdown(10)
    registry.stop()


#: Operations whose input the document cannot check whole (see the test below).
SEMANTIC_400 = {
    ("POST", "/api/policies/replication"),
    ("PUT", "/api/policies/replication/{id}"),
    ("POST", "/api/schedules/scan"),
}


def _breaks_only_the_documented_password_length(
    app: FastAPI, method: str, path: str, body: Any
) -> bool:
    """Whether ``body`` breaks the document only by a password longer than its
    ``maxLength`` that fits the service's limit. The document promises the characters
    that always fit the password's 62 bytes (4 bytes a character, as JSON Schema cannot
    count bytes); the service takes any password of up to 62 bytes, rightly."""
    password = body.get("password") if isinstance(body, dict) else None
    if not isinstance(password, str) or "\x00" in password:
        return False
    size = len(password.encode("utf-8", "surrogatepass"))
    if len(password) <= MAX_PASSWORD_BYTES // 4 or size > MAX_PASSWORD_BYTES:
        return False
    document = app.openapi()
    content = document["paths"][path][method.lower()]["requestBody"]["content"]
    schema = {**content["application/json"]["schema"], "components": document["components"]}
    return bool(jsonschema_rs.is_valid(schema, {**body, "password": "fits"}))


@needs_registry
@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES]
)
def test_every_operation_answers_as_its_openapi_document_says_and_never_5xx(
    fuzzed_app: tuple[str, FastAPI], method: str, path: str, mode: GenerationMode
) -> None:
    backend, app = fuzzed_app
    if backend == "postgresql" and mode is GenerationMode.NEGATIVE:
        pytest.skip("input the document refuses never reaches the database")
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        # The secret is a cookie the document requires: schemathesis makes one up, or
        # leaves it out to see a 401. A made-up one becomes the real one.
        if case.cookies and "secret" in case.cookies:
            case.cookies["secret"] = SECRET
        response = case.call()
        if path == "/api/jobs/scan" and response.status_code == 502:
            # The registry itself failed (docker-registry answers 500 to some long
            # names the spec allows): a 502 naming it is the documented answer.
            assert "source registry failed" in response.json()["message"]
            case.validate_response(response, excluded_checks=[not_a_server_error])
        elif (method, path) in SEMANTIC_400 and mode is GenerationMode.POSITIVE:
            # A schedule that only a cron parser can check, a time zone only the
            # time-zone database knows: a 400 naming the field is the answer to such
            # input that the document's patterns let through.
            if response.status_code == 400:
                assert response.json()["field"] in ("schedule", "timezone", "pattern")
            case.validate_response(response, excluded_checks=[positive_data_acceptance])
        elif (
            mode is GenerationMode.NEGATIVE
            and response.status_code < 300
            and _breaks_only_the_documented_password_length(app, method, path, case.body)
        ):
            case.validate_response(response, excluded_checks=[negative_data_rejection])
        else:
            case.validate_response(response)

    check()
