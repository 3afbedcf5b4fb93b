"""Replication and scans triggered by the registry's own events: a real docker-registry
(distribution 2.8) whose ``notifications.endpoints`` post to the service's HTTP API,
served by uvicorn on a loopback port, and real target registries; skopeo pushes and
deletes on the source and reads the digests back."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from registries import ImageBuilder, RegistryServer, push_image, skopeo_digest
from waiting import wait_until

from actors import JobService
from actors.http import create_app
from actors.http.routes.notifications import PATH
from model.db.tables import (
    Project,
    RegistryEvent,
    ReplicationImmediateTrigger,
    ReplicationPolicy,
    ReplicationTarget,
)
from model.registry import RegistryClient
from model.status import ACTIVE, TERMINAL, Status
from model.triggers import EVENTS_MEDIA_TYPE

pytestmark = pytest.mark.skipif(
    shutil.which("docker-registry") is None or shutil.which("skopeo") is None,
    reason="needs docker-registry and skopeo",
)

SECRET = "ui-secret-of-the-events-tests"
TOKEN = "notification-token-0123456789abcdef"
#: Seconds from the end of a push until its tag is on the target and scanned (issue 18).
PUSH_DEADLINE_S = 5.0
#: Seconds any other job of these small images may take.
JOB_TIMEOUT_S = 60.0

MakeService = Callable[..., JobService]


# -- the service's HTTP API, and what the registry posts to it ------------------------


@dataclass
class Delivery:
    """One notification request the API answered."""

    events: list[dict[str, Any]]
    status: int
    answer: dict[str, Any]
    #: The answer the registry got instead of ours (its connection "lost" it).
    lost: bool = False


class Recorder:
    """Wraps the app: records each notification request and the answer, and can lose
    the answer to the first delivery that ``lose`` picks (the registry then gets a 503
    and delivers the same envelope again, as after a timeout)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.deliveries: list[Delivery] = []
        self.lose: Callable[[list[dict[str, Any]]], bool] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        try:
            events = list(json.loads(body).get("events", []))
        except (ValueError, AttributeError):
            events = []
        lose = self.lose is not None and self.lose(events)
        if lose:
            self.lose = None
        status = 0
        answer = bytearray()

        async def noting(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                answer.extend(message.get("body", b""))
            if not lose:
                await send(message)

        await self.app(scope, replay, noting)
        if lose:
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        parsed = json.loads(answer) if answer else {}
        self.deliveries.append(Delivery(events, status, parsed, lose))

    def of(self, event_id: str) -> list[Delivery]:
        """The deliveries that carried the event ``event_id``."""
        return [d for d in list(self.deliveries) if any(e.get("id") == event_id for e in d.events)]

    def events(self, action: str, **target: str) -> list[dict[str, Any]]:
        """Events delivered with ``action`` whose target has the ``target`` values."""
        return [
            e
            for d in list(self.deliveries)
            for e in d.events
            if e.get("action") == action
            and all(e.get("target", {}).get(k) == v for k, v in target.items())
        ]


class Served:
    """The HTTP API of ``service`` (wrapped in a :class:`Recorder`) served by uvicorn on
    a loopback port bound at once, so the registry's config can name it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.recorder: Recorder | None = None
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return self.url + PATH

    def start(self, service: JobService) -> Recorder:
        recorder = self.recorder = Recorder(create_app(service))
        config = uvicorn.Config(recorder, log_config=None, access_log=False, lifespan="off")
        server = self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        wait_until(lambda: server.started, timeout=20)
        return recorder

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(10)
        self.sock.close()


def notifications_to(url: str, token: str = TOKEN) -> dict[str, Any]:
    """The registry's ``notifications:`` section posting every event to ``url``, with
    the bearer token, as the README shows."""
    return {
        "endpoints": [
            {
                "name": "jobservice",
                "url": url,
                "headers": {"Authorization": [f"Bearer {token}"]},
                "timeout": "5s",
                "threshold": 5,
                "backoff": "1s",
            }
        ]
    }


@dataclass
class Site:
    """A source registry notifying the served service, target registries, and the
    service's project ``library``."""

    service: JobService
    api: Served
    recorder: Recorder
    source: RegistryServer
    targets: dict[str, RegistryServer]
    project_id: int
    policies: dict[str, int] = field(default_factory=dict)

    def policy(self, target: str, *, on_push: bool = True, on_deletion: bool = False) -> int:
        """A policy replicating ``library`` to the target ``target``, with its immediate
        trigger (rows written as the catalog will write them)."""
        store = self.service.store
        row = store.add(ReplicationTarget(name=target, url=self.targets[target].url))
        assert row.id is not None
        policy = store.add(
            ReplicationPolicy(project_id=self.project_id, target_id=row.id, name=f"to-{target}")
        )
        assert policy.id is not None
        store.add(
            ReplicationImmediateTrigger(
                policy_id=policy.id, namespace="library", on_push=on_push, on_deletion=on_deletion
            )
        )
        self.policies[target] = policy.id
        return policy.id

    def jobs(self, table: str = "replication_job", **equal: Any) -> list[dict[str, Any]]:
        store = self.service.store
        statuses = [s.value for s in (*ACTIVE, *TERMINAL)]
        return [store.job(table, i) for i in store.job_ids(table, statuses, **equal)]


@pytest.fixture
def site(tmp_path: Path, make_service: MakeService) -> Iterator[Callable[..., Site]]:
    built: list[tuple[RegistryServer, dict[str, RegistryServer], Served]] = []

    def build(targets: tuple[str, ...] = ("dr",), auto_scan: bool = False, **values: Any) -> Site:
        api = Served()
        source = RegistryServer(tmp_path / "source", notifications=notifications_to(api.endpoint))
        servers = {name: RegistryServer(tmp_path / f"target-{name}") for name in targets}
        built.append((source, servers, api))
        for server in (source, *servers.values()):
            server.start()
        service = make_service(
            ui_secret=SECRET, notification_token=TOKEN, registry_url=source.url, **values
        )
        recorder = api.start(service)
        project = service.store.add(Project(name="library", auto_scan=auto_scan))
        assert project.id is not None
        return Site(service, api, recorder, source, servers, project.id)

    yield build
    # The source first: it stops posting before the API goes.
    for source, servers, api in built:
        source.stop()
        for server in servers.values():
            server.stop()
        api.stop()


def on(server: RegistryServer, repository: str, reference: str) -> str | None:
    """The digest of ``repository:reference`` on ``server``, None when absent."""
    with RegistryClient(server.url) as client:
        return client.manifest_digest(repository, reference)


def ended(
    site: Site, table: str = "replication_job", count: int = 1, **equal: Any
) -> list[dict[str, Any]]:
    """The jobs of ``table`` matching ``equal``, once there are ``count`` or more and
    every one of them has ended."""
    jobs = site.jobs(table, **equal)
    return jobs if len(jobs) >= count and all(j["status"] in TERMINAL for j in jobs) else []


def skopeo_delete(server: RegistryServer, repository: str, tag: str) -> None:
    subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "delete",
            "--tls-verify=false",
            f"docker://{server.host}/{repository}:{tag}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def post(site: Site, body: Any, token: str | None = TOKEN, **headers: str) -> httpx.Response:
    sent = {"content-type": EVENTS_MEDIA_TYPE, **headers}
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(site.api.endpoint, content=content, headers=sent, timeout=30)


# -- push -----------------------------------------------------------------------------


def test_a_tag_pushed_to_the_source_is_on_the_target_and_scanned_within_5_s(
    site: Callable[..., Site], images: ImageBuilder
) -> None:
    s = site(auto_scan=True)
    policy = s.policy("dr", on_push=True)
    index = images.oci_index(("amd64", "arm64"))

    push_image(images, index, s.source.host, "library/app", "v1")
    pushed = time.monotonic()

    transfer = wait_until(
        lambda: ended(s, policy_id=policy), timeout=PUSH_DEADLINE_S, interval=0.02
    )
    scan = wait_until(
        lambda: ended(s, "img_scan_job", repository="library/app"),
        timeout=max(PUSH_DEADLINE_S - (time.monotonic() - pushed), 0.1),
    )
    took = time.monotonic() - pushed
    assert [(j["status"], j["tags"], j["operation"]) for j in transfer] == [
        (Status.FINISHED, ["v1"], "transfer")
    ]
    assert [(j["status"], j["tag"], j["digest"]) for j in scan] == [
        (Status.FINISHED, "v1", index.digest)
    ]
    assert took < PUSH_DEADLINE_S
    assert skopeo_digest(s.targets["dr"].host, "library/app", "v1") == index.digest
    assert skopeo_digest(s.source.host, "library/app", "v1") == index.digest
    # The children pushed by digest, the blobs and the jobs' own pulls queued nothing.
    assert s.recorder.events("push", mediaType="application/octet-stream")
    assert [e for e in s.recorder.events("push") if not e["target"].get("tag")]
    assert all(d.status == 200 for d in s.recorder.deliveries)
    assert sum(d.answer["ignored"] for d in s.recorder.deliveries) >= 4
    assert len(s.jobs()) == 1 and len(s.jobs("img_scan_job")) == 1


def test_a_push_to_a_project_without_triggered_policies_queues_nothing(
    site: Callable[..., Site], images: ImageBuilder
) -> None:
    s = site()
    s.policy("dr", on_push=False, on_deletion=True)
    push_image(images, images.docker_image(), s.source.host, "library/app", "v1")
    push_image(images, images.docker_image(), s.source.host, "other/app", "v1")
    wait_until(lambda: len(s.recorder.events("push", tag="v1")) == 2, timeout=JOB_TIMEOUT_S)
    assert all(
        d.status == 200 and not any(d.answer["jobs"].values()) for d in s.recorder.deliveries
    )
    assert s.jobs() == [] and s.jobs("img_scan_job") == []
    assert s.service.store.list_rows(RegistryEvent) == []


# -- delete ---------------------------------------------------------------------------


def test_a_tag_deleted_on_the_source_goes_from_the_target_of_a_policy_on_deletion_only(
    site: Callable[..., Site], images: ImageBuilder
) -> None:
    s = site(targets=("keeps", "mirrors"))
    keeps = s.policy("keeps", on_push=True, on_deletion=False)
    mirrors = s.policy("mirrors", on_push=True, on_deletion=True)
    v1, v2 = images.docker_image(), images.oci_image()
    push_image(images, v1, s.source.host, "library/app", "v1")
    push_image(images, v2, s.source.host, "library/app", "v2")
    for policy in (keeps, mirrors):
        done = wait_until(lambda p=policy: ended(s, count=2, policy_id=p), timeout=JOB_TIMEOUT_S)
        assert {j["status"] for j in done} == {Status.FINISHED}
    for name in ("keeps", "mirrors"):
        assert on(s.targets[name], "library/app", "v1") == v1.digest

    skopeo_delete(s.source, "library/app", "v1")

    # distribution 2.8 reports the manifest deleted by digest, then the tag it had.
    wait_until(
        lambda: s.recorder.events("delete", repository="library/app", tag="v1"),
        timeout=JOB_TIMEOUT_S,
    )
    (deletion,) = wait_until(
        lambda: ended(s, policy_id=mirrors, operation="delete"), timeout=JOB_TIMEOUT_S
    )
    assert deletion["status"] == Status.FINISHED
    assert deletion["tags"] == [v1.digest]
    assert on(s.targets["mirrors"], "library/app", "v1") is None
    assert on(s.targets["mirrors"], "library/app", v1.digest) is None
    assert on(s.targets["mirrors"], "library/app", "v2") == v2.digest
    assert on(s.targets["keeps"], "library/app", "v1") == v1.digest
    assert skopeo_digest(s.targets["keeps"].host, "library/app", "v1") == v1.digest
    assert s.jobs(policy_id=keeps, operation="delete") == []
    # The tag's event is the same request's deletion: covered by the digest's job.
    (tag_delivery,) = [
        d
        for d in s.recorder.deliveries
        if any(e["target"].get("tag") == "v1" and e["action"] == "delete" for e in d.events)
    ]
    assert tag_delivery.answer["duplicates"] == 1
    log = Path(s.service.log_path("replication", deletion["id"])).read_text()
    assert f"manifest library/app@{v1.digest} deleted by digest" in log


def test_a_delete_job_naming_a_digest_deletes_that_manifest_and_every_tag_on_it(
    site: Callable[..., Site], images: ImageBuilder
) -> None:
    s = site()
    policy = s.policy("dr")
    target = s.targets["dr"]
    shared, other = images.docker_image(), images.docker_image()
    for tag in ("v1", "v1-alias"):
        push_image(images, shared, target.host, "library/app", tag)
    push_image(images, other, target.host, "library/app", "v2")
    missing = "sha256:" + "0" * 64

    ids = s.service.store.insert_jobs(
        "replication_job",
        [
            {
                "repository": "library/app",
                "policy_id": policy,
                "operation": "delete",
                "tags": [shared.digest, missing],
            }
        ],
        wake="replication",
    )
    s.service.wake(["replication"])

    assert s.service.wait("replication", ids[0], JOB_TIMEOUT_S) == Status.FINISHED
    with RegistryClient(target.url) as client:
        assert client.list_tags("library/app") == ["v2"]
    assert on(target, "library/app", shared.digest) is None
    log = Path(s.service.log_path("replication", ids[0])).read_text()
    assert f"manifest library/app@{missing} is not on the target" in log


# -- duplicates -----------------------------------------------------------------------


def test_an_event_the_registry_delivers_again_after_a_lost_answer_queues_one_job(
    site: Callable[..., Site], images: ImageBuilder
) -> None:
    s = site()
    policy = s.policy("dr")
    image = images.docker_image()
    # The first delivery of the tag's push is acted on, but the registry never sees our
    # 200: it gets a 503 and sends the same envelope again.
    s.recorder.lose = lambda events: any(e.get("target", {}).get("tag") for e in events)

    push_image(images, image, s.source.host, "library/app", "v1")

    event = wait_until(lambda: s.recorder.events("push", tag="v1"), timeout=JOB_TIMEOUT_S)[0]
    wait_until(lambda: len(s.recorder.of(event["id"])) >= 2, timeout=JOB_TIMEOUT_S)
    deliveries = s.recorder.of(event["id"])
    first, again = deliveries[0], deliveries[1]
    assert first.lost and first.status == 200 and first.answer["jobs"]["replication"]
    assert not again.lost and again.status == 200
    assert again.answer == {"jobs": {"replication": [], "scan": []}, "ignored": 0, "duplicates": 1}
    (job,) = wait_until(lambda: ended(s, policy_id=policy), timeout=JOB_TIMEOUT_S)
    assert job["status"] == Status.FINISHED
    assert skopeo_digest(s.targets["dr"].host, "library/app", "v1") == image.digest


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_same_envelope_posted_twice_queues_its_jobs_once(
    site: Callable[..., Site], backend: str, request: pytest.FixtureRequest
) -> None:
    on_postgres = backend == "postgresql"
    database = {"database_url": request.getfixturevalue("postgres_url")} if on_postgres else {}
    s = site(auto_scan=True, **database)
    policy = s.policy("dr", on_push=True, on_deletion=True)
    digest = "sha256:" + "ab" * 32
    request = {"id": str(uuid.uuid4()), "method": "DELETE"}
    envelope = {
        "events": [
            _event("push", tag="v1", digest=digest),
            # An index's child, a blob, pulls, a mount: nothing to do.
            _event("push", digest="sha256:" + "cd" * 32),
            _event("push", mediaType="application/octet-stream", digest="sha256:" + "ef" * 32),
            _event("pull", tag="v1", digest=digest),
            _event("mount", mediaType="application/octet-stream", digest=digest),
            # A manifest deleted by digest, then its tag, in one request.
            _event("delete", digest=digest, request=request, mediaType=None),
            _event("delete", tag="v0", request=request, mediaType=None),
            # A repository deleted whole: every tag of it goes from the target.
            _event("delete", repository="library/old", mediaType=None),
        ]
    }
    first = post(s, envelope)
    again = post(s, envelope)

    assert first.status_code == 200, first.text
    answer = first.json()
    assert len(answer["jobs"]["replication"]) == 3 and len(answer["jobs"]["scan"]) == 1
    assert (answer["ignored"], answer["duplicates"]) == (4, 1)
    assert again.json() == {"jobs": {"replication": [], "scan": []}, "ignored": 4, "duplicates": 4}
    rows = sorted((j["repository"], j["operation"], j["tags"]) for j in s.jobs(policy_id=policy))
    assert rows == [
        ("library/app", "delete", [digest]),
        ("library/app", "transfer", ["v1"]),
        ("library/old", "delete", []),
    ]
    (scan,) = s.jobs("img_scan_job")
    assert (scan["repository"], scan["tag"], scan["digest"]) == ("library/app", "v1", digest)


def _event(action: str, **target: Any) -> dict[str, Any]:
    request = target.pop("request", {"id": str(uuid.uuid4()), "method": "PUT"})
    values = {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "repository": "library/app",
        **target,
    }
    return {
        "id": str(uuid.uuid4()),
        "timestamp": "2026-01-01T00:00:00Z",
        "action": action,
        "target": {k: v for k, v in values.items() if v is not None},
        "request": request,
        "source": {"addr": "registry:5000"},
    }


# -- refusals ---------------------------------------------------------------------------


def test_an_event_without_the_right_bearer_token_is_refused_with_401_and_queues_nothing(
    site: Callable[..., Site],
) -> None:
    s = site()
    s.policy("dr")
    envelope = {"events": [_event("push", tag="v1", digest="sha256:" + "ab" * 32)]}

    missing = post(s, envelope, token=None)
    wrong = post(s, envelope, token=TOKEN[:-1] + "X")
    basic = post(s, envelope, token=None, authorization=f"Basic {TOKEN}")
    cookie_only = httpx.post(s.api.endpoint, json=envelope, cookies={"secret": SECRET}, timeout=30)

    for answer in (missing, wrong, basic, cookie_only):
        assert answer.status_code == 401, answer.text
        assert answer.json()["field"] == "authorization"
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert TOKEN not in answer.text
    assert "missing" in missing.json()["message"]
    assert "wrong" in wrong.json()["message"]
    assert "not 'Bearer" in basic.json()["message"]
    assert s.jobs() == [] and s.service.store.list_rows(RegistryEvent) == []


def test_the_route_answers_404_while_no_notification_token_is_set(
    make_service: MakeService,
) -> None:
    api = Served()
    try:
        api.start(make_service(ui_secret=SECRET))
        answer = httpx.post(
            api.endpoint, json={"events": []}, headers={"authorization": f"Bearer {TOKEN}"}
        )
    finally:
        api.stop()
    assert answer.status_code == 404
    assert answer.json()["field"] == "notification_token"
    assert "notification_token" in answer.json()["message"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (b"{not json", "body", "not JSON"),
        ([{"id": "x"}], "body", "envelope"),
        ({"event": []}, "events", "missing"),
        ({"events": {"id": "x"}}, "events", "list"),
        ({"events": ["push"]}, "events[0]", "event object"),
        ({"events": [{"action": "push", "target": {}}]}, "events[0].id", "non-empty"),
        ({"events": [{"id": "a", "action": "push"}]}, "events[0].target", "object"),
        (
            {"events": [{"id": "a", "action": "push", "target": {"repository": "Bad Name"}}]},
            "events[0].target.repository",
            "not a valid repository",
        ),
        (
            {"events": [{"id": "a", "action": "push", "target": {"repository": "a/b", "tag": 3}}]},
            "events[0].target.tag",
            "string",
        ),
        (
            {
                "events": [
                    {
                        "id": "a",
                        "action": "delete",
                        "target": {"repository": "a/b", "digest": "x/y"},
                    }
                ]
            },
            "events[0].target.digest",
            "not a digest",
        ),
    ],
)
def test_a_body_that_is_not_the_envelope_is_a_400_naming_the_part_and_queues_nothing(
    site: Callable[..., Site], body: Any, field: str, words: str
) -> None:
    s = site()
    s.policy("dr", on_push=True, on_deletion=True)
    # A good event first: a bad one anywhere refuses the whole envelope.
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        body = {"events": [_event("push", tag="v1", digest="sha256:" + "ab" * 32), *body["events"]]}
        field = field.replace("events[0]", "events[1]")

    answer = post(s, body)

    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == field
    assert words in answer.json()["message"]
    assert s.jobs() == [] and s.service.store.list_rows(RegistryEvent) == []
