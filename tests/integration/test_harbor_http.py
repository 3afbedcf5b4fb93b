"""The original's routes called as Harbor 1.4's own Go client calls them: the bytes its
``net/http`` writes (no Content-Type, ``json.Marshal`` of structs without
``omitempty``), over a socket to a real uvicorn server, answered as the original
answered. Bad values the original refused are still refused, with nothing written; the
new CRUD routes stay strict."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from registries import ImageBuilder, RegistryServer, free_port, push_image
from waiting import wait_until

from actors import JobService
from actors.http import create_app
from model.settings import Settings

SECRET = "harbor-ui-secret"

needs_registry = pytest.mark.skipif(
    shutil.which("docker-registry") is None or shutil.which("skopeo") is None,
    reason="needs docker-registry and skopeo",
)


def repositories_of(project: str) -> list[str]:
    return [f"{project}/app", f"{project}/web"]


class Answer:
    """An HTTP answer read off the socket."""

    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class HarborUi:
    """The HTTP API of ``service`` served by uvicorn on a loopback port (a thread of
    this process), and a client that writes requests byte for byte as Harbor 1.4's UI
    does (Go's ``net/http`` with the ``secret`` cookie), plus an ordinary one for setup."""

    def __init__(self, service: JobService) -> None:
        self.service = service
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(
            create_app(service), log_config=None, access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", cookies={"secret": SECRET}, timeout=30
        )

    def start(self) -> HarborUi:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=20)
        return self

    def stop(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    def send(self, method: str, path: str, body: bytes | None = None, **headers: str) -> Answer:
        """``method path`` as Go's client writes it: Host, User-Agent, Content-Length
        (with a body), the cookie, Accept-Encoding; ``headers`` added after them."""
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: 127.0.0.1:{self.port}",
            "User-Agent: Go-http-client/1.1",
        ]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        lines += [f"Cookie: secret={SECRET}", "Accept-Encoding: gzip"]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(request)
            answer = http.client.HTTPResponse(sock)
            answer.begin()
            return Answer(answer.status, answer.headers, answer.read())

    def post(self, path: str, body: bytes, **headers: str) -> Answer:
        return self.send("POST", path, body, **headers)

    def job_counts(self) -> dict[str, int]:
        """The number of jobs of each kind, whatever their status."""
        stats = self.http.get("/api/stats").json()
        return {kind: sum(pool["statuses"].values()) for kind, pool in stats.items()}

    def parameters(self, kind: str, job_id: int) -> dict[str, Any]:
        answer = self.http.get(f"/api/jobs/{kind}/{job_id}")
        assert answer.status_code == 200, answer.text
        parameters: dict[str, Any] = answer.json()["parameters"]
        return parameters


@pytest.fixture
def start_ui(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., HarborUi]]:
    started: list[HarborUi] = []

    def start(**values: Any) -> HarborUi:
        base: dict[str, Any] = {
            "ui_secret": SECRET,
            # Nothing listens there: replications retry, far in the future.
            "registry_url": f"http://127.0.0.1:{free_port()}",
            "retry_delay": 600,
            "retry_delay_max": 600,
        }
        base.update(values)
        service = JobService(make_settings(**base), list_repositories=repositories_of).start()
        ui = HarborUi(service)
        started.append(ui)
        return ui.start()

    yield start
    for ui in started:
        ui.stop()
        ui.service.shutdown(10)


@pytest.fixture
def ui(start_ui: Callable[..., HarborUi]) -> HarborUi:
    return start_ui()


@pytest.fixture
def policy_id(ui: HarborUi) -> int:
    project_id = ui.http.post("/api/projects", json={"name": "library"}).json()["id"]
    target = ui.http.post(
        "/api/targets", json={"name": "dr", "url": f"http://127.0.0.1:{free_port()}"}
    ).json()
    answer = ui.http.post(
        "/api/policies/replication",
        json={"name": "to-dr", "project_id": project_id, "target_id": target["id"]},
    )
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def replication_body(policy_id: int, repository: str, operation: str, tags: str) -> bytes:
    """What Harbor 1.4's ``TriggerReplication`` marshals (field order, no spaces, no
    ``omitempty``: a nil tag list is ``null``)."""
    return (
        f'{{"policy_id":{policy_id},"repository":"{repository}",'
        f'"operation":"{operation}","tags":{tags}}}'
    ).encode()


def assert_refused(answer: Answer, code: int, field: str) -> dict[str, Any]:
    assert answer.status == code, answer.body
    assert answer.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = answer.json()
    assert body["code"] == code and body["message"] and body["field"] == field, body
    return body


# -- scan --------------------------------------------------------------------------------------


@needs_registry
def test_harbors_scan_trigger_without_a_content_type_is_200_at_the_registrys_digest(
    start_ui: Callable[..., HarborUi], registry: RegistryServer, images: ImageBuilder
) -> None:
    digest = push_image(images, images.docker_image((512,)), registry.host, "library/app", "v2")
    ui = start_ui(registry_url=registry.url)
    answer = ui.post("/api/jobs/scan", b'{"repository":"library/app","tag":"v2"}')
    assert answer.status == 200, answer.body
    job_id = answer.json()["job_id"]
    assert ui.parameters("scan", job_id) == {
        "repository": "library/app",
        "tag": "v2",
        "digest": digest,
    }
    # Fields the original's request struct lacks are ignored: the digest is always the
    # one the registry has, as the original read it.
    other = ui.post(
        "/api/jobs/scan",
        b'{"repository":"library/app","tag":"v2","digest":"sha256:00","scan_all":true}',
    )
    assert other.status == 200, other.body
    assert ui.parameters("scan", other.json()["job_id"])["digest"] == digest
    # An image the registry lacks: 404, as the original; nothing written.
    counts = ui.job_counts()
    missing = ui.post("/api/jobs/scan", b'{"repository":"library/app","tag":"v3"}')
    assert_refused(missing, 404, "tag")
    assert ui.job_counts() == counts


# -- replication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain; charset=utf-8", "application/x-www-form-urlencoded"],
    ids=["no content-type", "text", "form"],
)
def test_harbors_zero_values_replicate_the_whole_policy_as_transfers_of_every_tag(
    ui: HarborUi, policy_id: int, content_type: str | None
) -> None:
    headers = {"Content_Type": content_type} if content_type else {}
    answer = ui.post(
        "/api/jobs/replication", replication_body(policy_id, "", "", "null"), **headers
    )
    assert answer.status == 200, answer.body
    jobs = [ui.parameters("replication", i) for i in answer.json()["job_ids"]]
    assert jobs == [
        {"repository": r, "policy_id": policy_id, "operation": "transfer", "tags": []}
        for r in ("library/app", "library/web")
    ]


def test_harbors_zero_operation_and_null_tags_transfer_every_tag_of_the_repository(
    ui: HarborUi, policy_id: int
) -> None:
    answer = ui.post(
        "/api/jobs/replication", replication_body(policy_id, "library/app", "", "null")
    )
    assert answer.status == 200, answer.body
    (job_id,) = answer.json()["job_ids"]
    assert ui.parameters("replication", job_id) == {
        "repository": "library/app",
        "policy_id": policy_id,
        "operation": "transfer",
        "tags": [],
    }


def test_harbors_delete_of_tags_is_queued_as_sent(ui: HarborUi, policy_id: int) -> None:
    answer = ui.post(
        "/api/jobs/replication", replication_body(policy_id, "library/app", "delete", '["v1"]')
    )
    assert answer.status == 200, answer.body
    (job_id,) = answer.json()["job_ids"]
    assert ui.parameters("replication", job_id) == {
        "repository": "library/app",
        "policy_id": policy_id,
        "operation": "delete",
        "tags": ["v1"],
    }


def test_without_a_repository_the_operation_and_tags_are_ignored_as_the_original_did(
    ui: HarborUi, policy_id: int
) -> None:
    answer = ui.post("/api/jobs/replication", replication_body(policy_id, "", "delete", '["v1"]'))
    assert answer.status == 200, answer.body
    jobs = [ui.parameters("replication", i) for i in answer.json()["job_ids"]]
    assert {(j["operation"], tuple(j["tags"])) for j in jobs} == {("transfer", ())}
    assert len(jobs) == 2


def test_unknown_fields_are_ignored_by_the_originals_routes(ui: HarborUi, policy_id: int) -> None:
    answer = ui.post(
        "/api/jobs/replication",
        f'{{"policy_id":{policy_id},"repository":"library/app","operation":"",'
        f'"tags":null,"priority":5,"trigger":{{"kind":"Manual"}}}}'.encode(),
    )
    assert answer.status == 200, answer.body
    assert len(answer.json()["job_ids"]) == 1
    stop = ui.post(
        "/api/jobs/replication/actions",
        f'{{"policy_id":{policy_id},"action":"stop","reason":"user"}}'.encode(),
    )
    assert stop.status == 200, stop.body
    assert stop.json() == {"job_ids": answer.json()["job_ids"]}


def test_harbors_stop_of_a_known_policy_is_200_and_its_log_reads_as_text(
    ui: HarborUi, policy_id: int
) -> None:
    (job_id,) = ui.post(
        "/api/jobs/replication", replication_body(policy_id, "library/app", "", "null")
    ).json()["job_ids"]
    # The source does not answer: the job waits in retrying, with a log.
    wait_until(lambda: ui.service.status("replication", job_id) == "retrying")
    log = ui.send("GET", f"/api/jobs/replication/{job_id}/log")
    assert log.status == 200 and log.headers["content-type"].startswith("text/plain")
    assert b"state running" in log.body
    stop = ui.post(
        "/api/jobs/replication/actions", f'{{"policy_id":{policy_id},"action":"stop"}}'.encode()
    )
    assert stop.status == 200 and stop.json() == {"job_ids": [job_id]}
    assert ui.service.status("replication", job_id) == "stopped"


def test_harbors_stop_of_an_unknown_policy_is_200_with_no_job_ids(ui: HarborUi) -> None:
    counts = ui.job_counts()
    answer = ui.post("/api/jobs/replication/actions", b'{"policy_id":4242,"action":"stop"}')
    assert answer.status == 200, answer.body
    assert answer.json() == {"job_ids": []}
    assert ui.job_counts() == counts


# -- what the original refused, still refused --------------------------------------------------

REFUSED = [
    ("not JSON", "/api/jobs/scan", b"library/app:v2", 400, "body"),
    ("not UTF-8", "/api/jobs/replication", b'{"policy_id":\xff}', 400, "body"),
    ("cut short", "/api/jobs/replication/actions", b'{"policy_id":1,', 400, "body"),
    ("trailing data", "/api/jobs/scan", b'{"repository":"a/b","tag":"v1"} x', 400, "body"),
    ("empty", "/api/jobs/replication", b"", 400, "body"),
    ("not an object", "/api/jobs/replication", b"[1]", 400, "body"),
    ("id as a string", "/api/jobs/replication", b'{"policy_id":"1"}', 400, "policy_id"),
    ("tags not a list", "/api/jobs/replication", b'{"policy_id":1,"tags":"v1"}', 400, "tags"),
    (
        "unknown operation",
        "/api/jobs/replication",
        b'{"policy_id":1,"repository":"library/app","operation":"copy","tags":null}',
        400,
        "operation",
    ),
    (
        "bad tag",
        "/api/jobs/replication",
        b'{"policy_id":1,"repository":"library/app","operation":"","tags":["no tag"]}',
        400,
        "tags[0]",
    ),
    (
        "another action",
        "/api/jobs/replication/actions",
        b'{"policy_id":1,"action":""}',
        400,
        "action",
    ),
    ("empty tag", "/api/jobs/scan", b'{"repository":"library/app","tag":""}', 400, "tag"),
    (
        "scan bad repository",
        "/api/jobs/scan",
        b'{"repository":"A//b","tag":"v1"}',
        400,
        "repository",
    ),
    (
        "unknown policy",
        "/api/jobs/replication",
        b'{"policy_id":4242,"repository":"","operation":"","tags":null}',
        404,
        "policy_id",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "code", "field"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_what_the_original_refused_is_refused_naming_the_field_and_writes_nothing(
    ui: HarborUi, policy_id: int, path: str, body: bytes, code: int, field: str
) -> None:
    counts = ui.job_counts()
    assert_refused(ui.post(path, body), code, field)
    assert ui.job_counts() == counts


# -- the new routes stay strict ----------------------------------------------------------------


def test_the_new_crud_routes_still_want_json_with_its_content_type_and_no_unknown_field(
    ui: HarborUi,
) -> None:
    body = assert_refused(ui.post("/api/projects", b'{"name":"library"}'), 400, "body")
    assert "Content-Type: application/json" in body["message"]
    assert_refused(
        ui.post(
            "/api/projects", b'{"name":"library","owner_id":1}', Content_Type="application/json"
        ),
        400,
        "owner_id",
    )
    assert ui.http.get("/api/projects").json() == []


def test_the_openapi_document_says_what_the_originals_routes_take(ui: HarborUi) -> None:
    schemas = ui.http.get("/openapi.json").json()["components"]["schemas"]
    replication = schemas["ReplicationRequest"]
    assert "additionalProperties" not in replication
    for name in ("repository", "operation", "tags"):
        kinds = replication["properties"][name]["anyOf"]
        assert {"type": "null"} in kinds
    assert {"const": "", "type": "string"} in replication["properties"]["operation"]["anyOf"]
    assert {"const": "", "type": "string"} in replication["properties"]["repository"]["anyOf"]
    assert schemas["ProjectIn"]["additionalProperties"] is False


def test_the_log_of_a_job_without_one_is_404_as_harbor_reads_it(ui: HarborUi) -> None:
    assert_refused(ui.send("GET", "/api/jobs/scan/77/log"), 404, "id")
