"""The HTTP API's edges, against a real uvicorn server over a started JobService: bodies
cut short, answers after a write, input that names other things than it seems, a
database that cannot be written (another process's SQLite write lock, the SQLite file
deleted or replaced, PostgreSQL read-only or stopped), duplicate cookies, the key file."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
import uvicorn
from loguru import logger
from postgres import PostgresCluster, _bin, postgres_cluster
from registries import ImageBuilder, RegistryServer, free_port, push_image
from waiting import wait_until

from actors import JobService
from actors.http import create_app
from model.db.tables import Project, ReplicationTarget
from model.errors import ConfigError
from model.settings import Settings

SECRET = "edges-test-secret"
PASSWORD = "edges-target-password"

needs_registry = pytest.mark.skipif(
    shutil.which("docker-registry") is None or shutil.which("skopeo") is None,
    reason="needs docker-registry and skopeo",
)


def repositories_of(project: str) -> list[str]:
    return [f"{project}/app"]


class LiveApi:
    """The HTTP API of ``service`` served by uvicorn on a free loopback port, in a
    thread of this process."""

    def __init__(self, service: JobService) -> None:
        self.service = service
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(service), log_config=None, access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.http = httpx.Client(base_url=self.url, cookies={"secret": SECRET}, timeout=30)

    def start(self) -> LiveApi:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=20)
        return self

    def stop(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    def metric(self, text: str) -> float:
        """The value of the first line of ``/metrics`` that starts with ``text``."""
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(text):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture
def start_api(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., LiveApi]]:
    started: list[LiveApi] = []

    def start(**values: Any) -> LiveApi:
        base: dict[str, Any] = {
            "ui_secret": SECRET,
            # Nothing listens there: replications retry, far in the future.
            "registry_url": f"http://127.0.0.1:{free_port()}",
            "retry_delay": 600,
            "retry_delay_max": 600,
        }
        base.update(values)
        service = JobService(make_settings(**base), list_repositories=repositories_of).start()
        api = LiveApi(service)
        started.append(api)
        return api.start()

    yield start
    for api in started:
        api.stop()
        api.service.shutdown(10)


@pytest.fixture
def api(start_api: Callable[..., LiveApi]) -> LiveApi:
    return start_api()


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every line the service logs during the test."""
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{level} {message}")
    yield lines
    logger.remove(sink)


def add_policy(http: httpx.Client, project: str = "library") -> int:
    project_id = http.post("/api/projects", json={"name": project}).json()["id"]
    target = http.post(
        "/api/targets",
        json={"name": "dr", "url": f"http://127.0.0.1:{free_port()}", "password": PASSWORD},
    ).json()
    answer = http.post(
        "/api/policies/replication",
        json={"name": "to-dr", "project_id": project_id, "target_id": target["id"]},
    )
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def assert_error(response: httpx.Response, code: int, field: str | None) -> dict[str, Any]:
    assert response.status_code == code, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code and body["message"]
    if field is not None:
        assert body.get("field") == field, body
    return body


def database_file(service: JobService) -> Path:
    database = sa.make_url(service.settings.database_url).database
    assert database is not None
    return Path(database)


# -- a body cut short ------------------------------------------------------------------------


@pytest.mark.parametrize("leave", ["half-close", "close"])
def test_a_body_cut_short_by_a_client_that_leaves_is_refused_and_writes_nothing(
    api: LiveApi, leave: str
) -> None:
    body = b'{"name": "evil"}'  # valid JSON on its own, 16 of the 100 bytes announced
    assert len(body) == 16
    request = (
        b"POST /api/projects HTTP/1.1\r\nHost: test\r\n"
        + f"Cookie: secret={SECRET}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        + body
    )
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(request)
        if leave == "half-close":
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            # The server may still answer a half-closed connection, or drop it.
            assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer
    # The request has been answered (to nobody) once the metrics count it.
    counted = 'jobservice_http_requests_total{code="400",method="POST",route="other"}'
    wait_until(lambda: api.metric(counted) == 1.0, timeout=10)
    assert api.http.get("/api/projects").json() == []
    assert api.service.store.list_rows(Project) == []


def test_a_whole_body_sent_in_pieces_is_still_taken(api: LiveApi) -> None:
    body = b'{"name": "library"}'
    head = (
        b"POST /api/projects HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        + f"Cookie: secret={SECRET}\r\n".encode()
        + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(head + body[:5])
        sock.sendall(body[5:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 201 "), answer
    assert [p.name for p in api.service.store.list_rows(Project)] == ["library"]


# -- nothing answers 5xx after a write -------------------------------------------------------


def test_a_replication_queued_while_its_pool_is_dead_answers_the_ids_it_wrote(
    api: LiveApi,
) -> None:
    policy_id = add_policy(api.http)
    api.service._pools["replication"].stop()
    answer = api.http.post(
        "/api/jobs/replication", json={"policy_id": policy_id, "repository": "library/app"}
    )
    assert answer.status_code == 200, answer.text
    (job_id,) = answer.json()["job_ids"]
    assert api.http.get(f"/api/jobs/replication/{job_id}").json()["status"] == "pending"
    assert api.service.store.job_ids("replication_job", ["pending"]) == [job_id]


@needs_registry
def test_a_scan_queued_while_its_pool_is_dead_answers_the_job_id_it_wrote(
    start_api: Callable[..., LiveApi], registry: RegistryServer, images: ImageBuilder
) -> None:
    push_image(images, images.docker_image((512,)), registry.host, "library/app", "v1")
    api = start_api(registry_url=registry.url)
    api.service._pools["scan"].stop()
    answer = api.http.post("/api/jobs/scan", json={"repository": "library/app", "tag": "v1"})
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["job_id"]
    assert api.http.get(f"/api/jobs/scan/{job_id}").json()["status"] == "pending"
    assert api.service.store.job_ids("img_scan_job", ["pending"]) == [job_id]


# -- input that reaches somewhere else than it says ------------------------------------------


def test_a_replication_of_a_repository_outside_the_policys_project_is_400_naming_repository(
    api: LiveApi,
) -> None:
    policy_id = add_policy(api.http, "library")
    api.http.post("/api/projects", json={"name": "otherproj"})
    for repository in ("otherproj/app", "library2/app", "libraryapp"):
        body = assert_error(
            api.http.post(
                "/api/jobs/replication",
                json={"policy_id": policy_id, "repository": repository},
            ),
            400,
            "repository",
        )
        assert repository in body["message"] and "library" in body["message"]
    assert api.service.store.status_counts("replication_job") == {}
    answer = api.http.post(
        "/api/jobs/replication", json={"policy_id": policy_id, "repository": "library/app"}
    )
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:0",
        "http://127.0.0.1:00/v2",
        "http://registry.example/../..",
        "http://registry.example/..",
        "https://registry.example/a/./b",
        "http://registry.example/a/%2e%2e/b",
        "http://registry.example/a/%2E",
    ],
)
def test_target_urls_with_port_0_or_dot_segments_are_400_naming_url(api: LiveApi, url: str) -> None:
    body = assert_error(api.http.post("/api/targets", json={"name": "dr", "url": url}), 400, "url")
    assert "port 0" in body["message"] or "'..'" in body["message"]
    target = api.http.post("/api/targets", json={"name": "ok", "url": "http://registry.example"})
    assert target.status_code == 201, target.text
    assert_error(api.http.put(f"/api/targets/{target.json()['id']}", json={"url": url}), 400, "url")
    api.http.delete(f"/api/targets/{target.json()['id']}")
    assert api.service.store.list_rows(ReplicationTarget) == []


def test_target_urls_with_dots_inside_segments_are_taken(api: LiveApi) -> None:
    url = "http://registry.example:5000/a.b/..c/.d/..."
    answer = api.http.post("/api/targets", json={"name": "dots", "url": url})
    assert answer.status_code == 201, answer.text
    assert answer.json()["url"] == url


# -- the secret cookie -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "cookies",
    [
        [f"secret=wrong; secret={SECRET}"],
        [f"secret={SECRET}; secret=wrong"],
        [f"secret={SECRET}; secret={SECRET}"],
        ["secret=wrong", f"secret={SECRET}"],
        [f"secret={SECRET}", "other=1; secret=wrong"],
    ],
)
def test_a_request_with_two_secret_cookies_is_refused_whichever_comes_last(
    api: LiveApi, cookies: list[str]
) -> None:
    with httpx.Client(base_url=api.url, timeout=10) as anonymous:
        headers = [("cookie", value) for value in cookies]
        for method, path in (("GET", "/api/projects"), ("POST", "/api/projects")):
            answer = anonymous.request(method, path, headers=headers, json={"name": "x"})
            body = assert_error(answer, 400, "secret")
            assert "2 times" in body["message"]
            assert SECRET not in answer.text
    assert api.service.store.list_rows(Project) == []


# -- the key file ----------------------------------------------------------------------------


def test_a_service_refuses_to_start_without_the_key_of_its_encrypted_passwords(
    start_api: Callable[..., LiveApi], make_settings: Callable[..., Settings]
) -> None:
    api = start_api()
    add_policy(api.http)
    settings = api.service.settings
    api.stop()
    api.service.shutdown(10)
    key = settings.key_path.read_bytes()
    settings.key_path.unlink()
    with pytest.raises(ConfigError, match="key_path") as refused:
        JobService(settings).start()
    assert str(settings.key_path) in str(refused.value)
    assert "1 target passwords" in str(refused.value)
    assert not settings.key_path.exists()
    settings.key_path.write_bytes(key)
    service = JobService(settings).start()
    try:
        (target,) = service.store.list_rows(ReplicationTarget)
        assert service.box.decrypt(target.password) == PASSWORD
    finally:
        service.shutdown(10)


def test_a_new_key_is_made_for_a_database_without_encrypted_passwords(
    start_api: Callable[..., LiveApi],
) -> None:
    api = start_api()
    answer = api.http.post("/api/targets", json={"name": "open", "url": "http://registry.example"})
    assert answer.status_code == 201
    settings = api.service.settings
    api.stop()
    api.service.shutdown(10)
    settings.key_path.unlink()
    service = JobService(settings).start()
    service.shutdown(10)
    assert settings.key_path.read_bytes().strip()


# -- SQLite: another process holds the write lock -----------------------------------------------


class LockHolder:
    """Another process that holds the SQLite write lock (``BEGIN IMMEDIATE``) until
    :meth:`release`."""

    def __init__(self, path: Path) -> None:
        script = (
            "import sqlite3, sys\n"
            f"conn = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "conn.execute('BEGIN IMMEDIATE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n"
            "conn.execute('ROLLBACK')\n"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == b"locked\n"

    def release(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(10) == 0


def test_healthz_is_503_naming_the_lock_while_another_process_holds_the_sqlite_write_lock(
    api: LiveApi, log_lines: list[str]
) -> None:
    path = database_file(api.service)
    assert api.http.get("/healthz").json() == {"status": "ok"}
    holder = LockHolder(path)
    try:
        answer = api.http.get("/healthz")
        assert answer.status_code == 503, answer.text
        cause = answer.json()["cause"]
        assert "locked" in cause and str(path) in cause
        # Readers do not wait for a writer; a write waits for the lock and lands.
        assert api.http.get("/api/projects").status_code == 200
        written: list[httpx.Response] = []
        writer = threading.Thread(
            target=lambda: written.append(api.http.post("/api/projects", json={"name": "late"}))
        )
        writer.start()
    finally:
        holder.release()
    writer.join(30)
    assert written[0].status_code == 201, written[0].text
    wait_until(lambda: api.http.get("/healthz").status_code == 200, timeout=10)
    assert any("ERROR" in line and "locked" in line for line in log_lines), log_lines
    assert any("takes writes again" in line for line in log_lines), log_lines


# -- SQLite: the file deleted or replaced under the service ---------------------------------------


def test_the_sqlite_file_deleted_under_the_service_makes_the_api_answer_503_naming_it(
    api: LiveApi, log_lines: list[str]
) -> None:
    policy_id = add_policy(api.http)
    path = database_file(api.service)
    path.unlink()

    def refused() -> httpx.Response | None:
        answer = api.http.post("/api/projects", json={"name": "lost"})
        return answer if answer.status_code == 503 else None

    answer = wait_until(refused, timeout=5)
    assert str(path) in answer.json()["message"] and "deleted" in answer.json()["message"]
    assert answer.headers["retry-after"]
    for method, route, body in (
        ("GET", "/api/projects", None),
        ("POST", "/api/jobs/replication", {"policy_id": policy_id, "repository": "library/app"}),
        ("GET", "/api/stats", None),
    ):
        assert_error(api.http.request(method, route, json=body), 503, None)
    health = api.http.get("/healthz")
    assert health.status_code == 503 and "deleted" in health.json()["cause"]
    assert not path.exists()  # the checks never make a new empty database
    deleted = [line for line in log_lines if "ERROR" in line and "was deleted" in line]
    assert len(deleted) == 1 and str(path) in deleted[0], log_lines
    assert PASSWORD not in "\n".join(log_lines)


def test_the_sqlite_file_replaced_under_the_service_makes_the_api_answer_503_naming_it(
    api: LiveApi, tmp_path: Path
) -> None:
    path = database_file(api.service)
    api.http.post("/api/projects", json={"name": "before"})
    copy = tmp_path / "copy.db"
    with sqlite3.connect(path) as source, sqlite3.connect(copy) as destination:
        source.backup(destination)
    os.replace(copy, path)

    def refused() -> httpx.Response | None:
        answer = api.http.get("/api/projects")
        return answer if answer.status_code == 503 else None

    message = wait_until(refused, timeout=5).json()["message"]
    assert str(path) in message and "replaced" in message
    health = api.http.get("/healthz")
    assert health.status_code == 503 and "replaced" in health.json()["cause"]


# -- PostgreSQL: read-only, stopped ------------------------------------------------------------


def test_healthz_is_503_while_the_postgresql_database_is_read_only_and_200_after(
    start_api: Callable[..., LiveApi], postgres: PostgresCluster
) -> None:
    url = postgres.new_database()
    api = start_api(database_url=url)
    name = sa.make_url(url).database
    admin = f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres"
    assert api.http.get("/healthz").status_code == 200
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    try:
        answer = api.http.get("/healthz")
        assert answer.status_code == 503, answer.text
        assert "read-only" in answer.json()["cause"]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
    assert api.http.get("/healthz").json() == {"status": "ok"}


def start_again(cluster: PostgresCluster) -> None:
    """Starts a cluster that :meth:`PostgresCluster.stop` stopped, on the same port."""
    options = f"-c listen_addresses=127.0.0.1 -p {cluster.port} -k {cluster.folder}"
    subprocess.run(
        [
            *cluster._as_user,
            _bin("pg_ctl"),
            "-D",
            str(cluster.folder / "data"),
            "-o",
            options,
            "-l",
            str(cluster.folder / "log"),
            "-w",
            "-t",
            "60",
            "start",
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster for one test that stops it (the session's stays up)."""
    with postgres_cluster() as cluster:
        yield cluster


def test_every_api_route_answers_503_while_postgresql_is_down_and_healthz_recovers(
    start_api: Callable[..., LiveApi], own_cluster: PostgresCluster, log_lines: list[str]
) -> None:
    api = start_api(database_url=own_cluster.new_database())
    policy_id = add_policy(api.http)
    # The cluster commits asynchronously and stops without a shutdown checkpoint: what
    # the service wrote must be on disk before the stop.
    with psycopg.connect(own_cluster.url().replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    own_cluster.stop()
    try:
        health = api.http.get("/healthz")
        assert health.status_code == 503, health.text
        assert "cannot reach the database" in health.json()["cause"]
        for method, route, body in (
            ("GET", "/api/projects", None),
            ("POST", "/api/projects", {"name": "new"}),
            ("GET", f"/api/policies/replication/{policy_id}", None),
            (
                "POST",
                "/api/jobs/replication",
                {"policy_id": policy_id, "repository": "library/app"},
            ),
            ("GET", "/api/jobs/replication/1", None),
            ("GET", "/api/stats", None),
        ):
            answer = api.http.request(method, route, json=body)
            message = assert_error(answer, 503, None)["message"]
            assert "database is unavailable" in message, (method, route, message)
            assert answer.headers["retry-after"]
    finally:
        start_again(own_cluster)
    wait_until(lambda: api.http.get("/healthz").status_code == 200, timeout=20)
    wait_until(lambda: api.http.get("/api/projects").status_code == 200, timeout=20)
    assert PASSWORD not in "\n".join(log_lines)
