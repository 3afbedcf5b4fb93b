"""``jobservice serve`` as a person runs it: the installed console script in a subprocess
on a free port with a temporary SQLite file, driven only over HTTP and with the CLI,
against real local registries (Debian's docker-registry), digests checked by skopeo."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from registries import (
    ImageBuilder,
    RegistryServer,
    free_port,
    htpasswd_auth,
    push_image,
    skopeo_digest,
)
from waiting import wait_until

from model.db import migrations

pytestmark = pytest.mark.skipif(
    shutil.which("docker-registry") is None or shutil.which("skopeo") is None,
    reason="needs docker-registry and skopeo",
)

SECRET = "acceptance-ui-secret"
TARGET_USER, TARGET_PASSWORD = "replicator", "t4rget-Passw0rd-never-shown"
JOBSERVICE = Path(sys.executable).with_name("jobservice")
#: Seconds a started service may take to answer /healthz.
START_TIMEOUT_S = 30.0
#: Seconds a job of these small images may take.
JOB_TIMEOUT_S = 60.0


class Served:
    """``jobservice serve`` in a subprocess, with its files under ``root``."""

    def __init__(self, root: Path, **settings: Any) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "serve.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("JOBSERVICE_", "UI_"))},
            "JOBSERVICE_DATABASE_URL": f"sqlite:///{root}/jobservice.db",
            "JOBSERVICE_LOG_DIR": str(root / "logs"),
            "JOBSERVICE_KEY_PATH": str(root / "jobservice.key"),
            "JOBSERVICE_UI_SECRET": SECRET,
            "JOBSERVICE_LISTEN_PORT": str(self.port),
            "JOBSERVICE_SHUTDOWN_TIMEOUT": "3",
            "JOBSERVICE_RETRY_DELAY": "1",
            "JOBSERVICE_RETRY_DELAY_MAX": "2",
            "JOBSERVICE_URL": self.url,
            "JOBSERVICE_SECRET": SECRET,
        }
        self.env.update({f"JOBSERVICE_{k.upper()}": str(v) for k, v in settings.items()})
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, cookies={"secret": SECRET}, timeout=10)

    def cli(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """Runs ``jobservice ARGS`` against this service; returns its standard output."""
        result = subprocess.run(
            [str(JOBSERVICE), *args],
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"jobservice {' '.join(args)} exited {result.returncode}: {result.stderr}"
            )
        self.last = result
        return result.stdout

    def upgrade(self) -> None:
        """Creates the schema (in this process: the CLI's ``db upgrade`` has its own test)."""
        migrations.upgrade(self.env["JOBSERVICE_DATABASE_URL"])

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(JOBSERVICE), "serve"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited {self.process.returncode}: {self.log()}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout=START_TIMEOUT_S)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        code = self.process.wait(timeout)
        self.process = None
        return code

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def job(self, kind: str, job_id: int) -> dict[str, Any]:
        answer = self.http.get(f"/api/jobs/{kind}/{job_id}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def wait_status(self, kind: str, job_id: int, *statuses: str) -> dict[str, Any]:
        return wait_until(
            lambda: (job := self.job(kind, job_id))["status"] in statuses and job,
            timeout=JOB_TIMEOUT_S,
        )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    service = Served(tmp_path / "service")
    service.root.mkdir()
    service.upgrade()
    yield service
    service.stop()


@pytest.fixture
def images(tmp_path: Path) -> ImageBuilder:
    return ImageBuilder(tmp_path / "images")


@pytest.fixture
def registries(tmp_path: Path) -> Iterator[tuple[RegistryServer, RegistryServer]]:
    """A source registry and a target that wants a user and password (htpasswd)."""
    source = RegistryServer(tmp_path / "source")
    target_root = tmp_path / "target"
    target = RegistryServer(
        target_root, auth=htpasswd_auth(target_root, {TARGET_USER: TARGET_PASSWORD})
    )
    source.start()
    target.start()
    yield source, target
    for server in (source, target):
        process = server._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)
        server.stop()


def paused(server: RegistryServer) -> Any:
    """SIGSTOP a registry: requests to it hang, as a slow network would."""
    assert server._process is not None
    server._process.send_signal(signal.SIGSTOP)


def resumed(server: RegistryServer) -> None:
    assert server._process is not None
    server._process.send_signal(signal.SIGCONT)


def set_up_replication(served: Served, target: RegistryServer) -> None:
    """Project, target (password on standard input) and policy, with the CLI."""
    served.cli("project", "add", "library")
    served.cli(
        "target", "add", "dr", target.url, "--username", TARGET_USER, input=TARGET_PASSWORD + "\n"
    )
    served.cli("policy", "add", "to-dr", "--project", "library", "--target", "dr")


def set_up_replication_over_http(served: Served, target: RegistryServer) -> int:
    """Project, target and policy, over HTTP; returns the policy's id."""
    project = served.http.post("/api/projects", json={"name": "library"}).json()
    dr = served.http.post(
        "/api/targets",
        json={
            "name": "dr",
            "url": target.url,
            "username": TARGET_USER,
            "password": TARGET_PASSWORD,
        },
    ).json()
    policy = served.http.post(
        "/api/policies/replication",
        json={"name": "to-dr", "project_id": project["id"], "target_id": dr["id"]},
    )
    assert policy.status_code == 201, policy.text
    return int(policy.json()["id"])


# -- start-up, auth, input -------------------------------------------------------------------


def test_serve_refuses_a_database_behind_its_migrations_until_db_upgrade(tmp_path: Path) -> None:
    served = Served(tmp_path)
    result = subprocess.run(
        [str(JOBSERVICE), "serve"],
        env=served.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "run `jobservice db upgrade`" in result.stderr
    status = subprocess.run(
        [str(JOBSERVICE), "db", "status"],
        env=served.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    head = migrations.head()
    assert status.returncode == 1 and f"needs: {head}" in status.stdout
    assert f"now at revision {head} (was empty)" in served.cli("db", "upgrade")
    served.start()
    try:
        assert served.http.get("/healthz").json() == {"status": "ok"}
    finally:
        served.stop()


def test_serve_refuses_to_start_when_encrypted_passwords_exist_and_the_key_file_does_not(
    served: Served,
) -> None:
    key_path = Path(served.env["JOBSERVICE_KEY_PATH"])
    assert not key_path.exists()
    served.start()
    assert key_path.exists()  # a new database: a new key
    answer = served.http.post(
        "/api/targets",
        json={"name": "dr", "url": "http://registry.example", "password": TARGET_PASSWORD},
    )
    assert answer.status_code == 201, answer.text
    served.signal(signal.SIGTERM)
    assert served.wait(30) == 0
    kept = key_path.with_name("kept.key")
    key_path.rename(kept)
    result = subprocess.run(
        [str(JOBSERVICE), "serve"],
        env=served.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"the key file {key_path} does not exist" in result.stderr
    assert "1 target passwords encrypted" in result.stderr
    assert TARGET_PASSWORD not in result.stderr + result.stdout
    assert not key_path.exists()  # no new key that could not decrypt them
    kept.rename(key_path)
    served.start()
    assert served.http.get("/healthz").json() == {"status": "ok"}


def test_over_http_the_api_wants_the_secret_and_probes_are_open(served: Served) -> None:
    old_log = served.root / "logs" / "1" / "job_1000.log"
    old_log.parent.mkdir(parents=True)
    old_log.write_text("long ago\n")
    month_ago = time.time() - 30 * 86400
    os.utime(old_log, (month_ago, month_ago))
    served.start()
    anonymous = httpx.Client(base_url=served.url, timeout=10)
    missing = anonymous.get("/api/stats")
    assert missing.status_code == 401 and missing.json()["field"] == "secret"
    anonymous.cookies.set("secret", "wrong")
    assert anonymous.get("/api/projects").status_code == 403
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    metrics = anonymous.get("/metrics")
    assert metrics.status_code == 200 and "jobservice_up 1.0" in metrics.text
    assert 'jobservice_workers{kind="replication"} 3.0' in metrics.text
    stats = served.http.get("/api/stats").json()
    assert stats["scan"]["size"] == 3 and stats["replication"]["busy"] == 0
    refused = subprocess.run(
        [str(JOBSERVICE), "project", "list"],
        env={**served.env, "JOBSERVICE_SECRET": "wrong"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1 and "HTTP 403" in refused.stderr
    # The sweeper deleted the month-old job log as the service started.
    wait_until(lambda: not old_log.exists(), timeout=10)


BAD = [
    ("POST", "/api/jobs/replication", b'{"policy_id": ', 400, "body"),
    ("POST", "/api/jobs/replication", b'{"policy_id": "7"}', 400, "policy_id"),
    ("POST", "/api/projects", b'{"name": "p", "when": "now"}', 400, "when"),
    ("POST", "/api/jobs/replication", b'{"policy_id": -7}', 400, "policy_id"),
    ("POST", "/api/jobs/scan", b'{"repository": "library/app", "tag": 1}', 400, "tag"),
    ("POST", "/api/targets", b'{"name": "t", "url": "ftp://x"}', 400, "url"),
    ("GET", "/api/jobs/replication/seven/log", None, 400, "id"),
    ("GET", "/api/jobs/scan/-1/log", None, 400, "id"),
    ("POST", "/api/projects", b'{"name": "' + b"x" * 2_000_000 + b'"}', 413, "body"),
]


def test_over_http_each_bad_input_class_gets_a_4xx_json_answer_naming_the_field(
    served: Served,
) -> None:
    served.start()
    for method, path, body, code, field in BAD:
        answer = served.http.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
        assert answer.status_code == code, (path, body and body[:60], answer.text)
        assert answer.json()["field"] == field
    chunked = served.http.post(
        "/api/projects",
        content=iter([b'{"name": "', b"y" * 1_100_000, b'"}']),
        headers={"content-type": "application/json"},
    )
    assert chunked.status_code == 413
    assert served.http.get("/healthz").status_code == 200


# -- the flows, with the CLI -------------------------------------------------------------------


def test_a_replication_and_a_scan_run_end_to_end_with_the_cli(
    served: Served,
    registries: tuple[RegistryServer, RegistryServer],
    images: ImageBuilder,
) -> None:
    source, target = registries
    shared = images.random_layer(200_000)
    v1 = push_image(
        images, images.docker_image([shared, 300_000]), source.host, "library/app", "v1"
    )
    v2 = push_image(images, images.oci_image([shared, 100_000]), source.host, "library/app", "v2")
    web = push_image(images, images.docker_image((50_000,)), source.host, "library/web", "latest")
    served.env["JOBSERVICE_REGISTRY_URL"] = source.url
    # One job at a time: two first requests racing on one shared target client read
    # the other's 401 as "credentials refused" (model/registry/_auth.py, reported).
    served.env["JOBSERVICE_MAX_JOB_WORKERS"] = "1"
    served.start()
    set_up_replication(served, target)

    ids = served.cli("replicate", "to-dr", "--quiet").split()
    assert len(ids) == 2  # one job per repository of the project
    (scan_id,) = served.cli("scan", "library/app", "v1", "--quiet").split()
    jobs = [f"--job=replication:{i}" for i in ids] + [f"--job=scan:{scan_id}"]
    watched = served.cli("watch", "--until-done", "--interval", "0.2", *jobs, check=False)
    for job_id in ids:
        job = served.job("replication", int(job_id))
        assert job["status"] == "finished", served.cli("logs", "replication", job_id)
    assert served.last.returncode == 0 and "finished" in watched
    creds = f"{TARGET_USER}:{TARGET_PASSWORD}"
    assert skopeo_digest(target.host, "library/app", "v1", creds=creds) == v1
    assert skopeo_digest(target.host, "library/app", "v2", creds=creds) == v2
    assert skopeo_digest(target.host, "library/web", "latest", creds=creds) == web

    scan = served.job("scan", int(scan_id))
    assert scan["status"] == "finished" and scan["parameters"]["digest"] == v1
    result = served.http.get(f"/api/images/{v1}/scan")
    assert result.status_code == 200 and result.json()["scan_job_id"] == int(scan_id)

    status = served.cli("status", "replication", ids[0])
    assert "finished" in status and "library/" in status
    followed = served.cli("logs", "replication", ids[0], "--follow")
    assert "state finished" in followed
    # The service's own log: a line per job that ended, every state in the job's log.
    assert f"replication job {ids[0]} is finished" in served.log()
    assert "state finished" not in served.log()
    served.cli("scan", "library/app", "missing", check=False)
    assert served.last.returncode == 1
    assert "library/app:missing is not in the source registry (HTTP 404)" in served.last.stderr
    metrics = served.http.get("/metrics").text
    assert 'jobservice_jobs{kind="replication",status="finished"} 2.0' in metrics
    assert 'jobservice_job_duration_seconds_count{kind="scan",status="finished"} 1.0' in metrics
    sent = [
        line
        for line in metrics.splitlines()
        if line.startswith("jobservice_replication_bytes_sent_total")
    ]
    assert sent and float(sent[0].split()[-1]) > 600_000
    # The password went in on standard input; it comes out nowhere.
    targets = served.cli("target", "list", "--json")
    assert '"has_password": true' in targets
    table = served.cli("target", "list") + served.cli("policy", "list")
    assert "set" in table and "to-dr" in table and "yes" in table
    outputs = [served.log(), targets, watched, followed, status]
    outputs += [p.read_text() for p in (served.root / "logs").rglob("*.log")]
    assert not [text for text in outputs if TARGET_PASSWORD in text]


# -- signals and restarts ---------------------------------------------------------------------


def stuck_replication(
    served: Served, source: RegistryServer, target: RegistryServer, images: ImageBuilder
) -> tuple[int, int, str]:
    """Two replication jobs on one worker: the first hangs on a paused target (running),
    the second waits (pending). Returns their ids and the image's digest."""
    digest = push_image(images, images.docker_image((400_000,)), source.host, "library/app", "v1")
    push_image(images, images.docker_image((100_000,)), source.host, "library/web", "v1")
    served.env["JOBSERVICE_REGISTRY_URL"] = source.url
    served.env["JOBSERVICE_MAX_JOB_WORKERS"] = "1"
    served.start()
    policy = set_up_replication_over_http(served, target)
    paused(target)
    answer = served.http.post("/api/jobs/replication", json={"policy_id": policy})
    first, second = answer.json()["job_ids"]
    served.wait_status("replication", first, "running")
    assert served.job("replication", second)["status"] == "pending"
    return first, second, digest


def finish_after_restart(
    served: Served, target: RegistryServer, jobs: tuple[int, int], digest: str
) -> None:
    resumed(target)
    served.start()
    for job_id in jobs:
        job = served.wait_status("replication", job_id, "finished", "error", "stopped")
        assert job["status"] == "finished", served.cli("logs", "replication", str(job_id))
    creds = f"{TARGET_USER}:{TARGET_PASSWORD}"
    assert skopeo_digest(target.host, "library/app", "v1", creds=creds) == digest


def test_sigterm_mid_replication_exits_0_and_the_next_start_finishes_the_jobs(
    served: Served, registries: tuple[RegistryServer, RegistryServer], images: ImageBuilder
) -> None:
    source, target = registries
    first, second, digest = stuck_replication(served, source, target, images)
    began = time.monotonic()
    served.signal(signal.SIGTERM)
    assert served.wait(timeout=30) == 0
    # shutdown_timeout is 3 s: the hung job is left for the next start.
    assert time.monotonic() - began < 15
    assert "SIGTERM: stopping" in served.log()
    finish_after_restart(served, target, (first, second), digest)


def test_sigkill_mid_replication_and_the_next_start_finishes_the_jobs(
    served: Served, registries: tuple[RegistryServer, RegistryServer], images: ImageBuilder
) -> None:
    source, target = registries
    first, second, digest = stuck_replication(served, source, target, images)
    served.signal(signal.SIGKILL)
    assert served.wait(timeout=10) == -signal.SIGKILL
    finish_after_restart(served, target, (first, second), digest)


def test_a_second_signal_exits_at_once_and_loses_no_job(
    served: Served, registries: tuple[RegistryServer, RegistryServer], images: ImageBuilder
) -> None:
    source, target = registries
    served.env["JOBSERVICE_SHUTDOWN_TIMEOUT"] = "60"
    first, second, digest = stuck_replication(served, source, target, images)
    served.signal(signal.SIGTERM)
    wait_until(lambda: "SIGTERM: stopping" in served.log(), timeout=10)
    began = time.monotonic()
    served.signal(signal.SIGINT)
    assert served.wait(timeout=10) == 128 + signal.SIGINT
    assert time.monotonic() - began < 5
    served.env["JOBSERVICE_SHUTDOWN_TIMEOUT"] = "3"
    finish_after_restart(served, target, (first, second), digest)


def test_stop_and_stop_policy_with_the_cli_stop_waiting_and_blocked_running_jobs_at_once(
    served: Served, registries: tuple[RegistryServer, RegistryServer], images: ImageBuilder
) -> None:
    source, target = registries
    first, second, _digest = stuck_replication(served, source, target, images)
    assert "it was pending" in served.cli("stop", "replication", str(second))
    assert served.job("replication", second)["status"] == "stopped"
    assert f"stop asked for 1 job(s): {first}" in served.cli("stop-policy", "to-dr")
    # The stop cuts short the request the paused target never answers.
    served.wait_status("replication", first, "stopped")
    resumed(target)
    assert "stopped" in served.cli("status", "replication", str(first))
