"""Replication jobs through the whole engine against real registries behind a fault
proxy (:mod:`faultproxy`): in front of the source, the target, or both.

For each fault the job ends ``finished`` with every tag's manifest digest equal to the
source's (``skopeo inspect --raw`` on both) and every blob on the target, or ``error``
with a message naming the fault; never is a tag on the target left pointing at a
missing or wrong blob. A stop during each fault ends the job ``stopped`` within 1 s.

The registries and proxies are started once for the module; each test pushes an image
of its own (a 1.2 MB and a 150 KB layer) to a repository of its own.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from faultproxy import Fault, FaultProxy
from registries import Image, ImageBuilder, RegistryServer, push_image, skopeo_digest

from actors import JobService
from model.db.tables import Project, ReplicationPolicy, ReplicationTarget
from model.joblog import job_log_path
from model.status import Status

#: A blob download (not an upload session, not a manifest).
BLOB_GET = r"/blobs/sha256:"
#: Seconds a replication under a fault may take.
JOB_TIMEOUT_S = 60.0
#: Seconds a stop may take to end a job, whatever fault it meets.
STOP_WITHIN_S = 1.0
#: Read timeout of the service's registry clients where a stall must end in a retry.
SHORT_READ_TIMEOUT_S = 2.0

MakeService = Callable[..., JobService]
FaultFor = Callable[[Image], Fault]

_repositories = itertools.count(1)


@dataclass
class Setup:
    source: RegistryServer
    target: RegistryServer
    source_proxy: FaultProxy
    target_proxy: FaultProxy

    def proxy(self, side: str) -> FaultProxy:
        return self.source_proxy if side == "source" else self.target_proxy


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("faults")
    source, target = RegistryServer(root / "source"), RegistryServer(root / "target")
    source.start()
    target.start()
    source_proxy, target_proxy = FaultProxy(source.host), FaultProxy(target.host)
    source_proxy.start()
    target_proxy.start()
    yield Setup(source, target, source_proxy, target_proxy)
    for stop in (source_proxy.stop, target_proxy.stop, target.stop, source.stop):
        stop()


@pytest.fixture(autouse=True)
def _no_faults_left(setup: Setup) -> Iterator[None]:
    for proxy in (setup.source_proxy, setup.target_proxy):
        proxy.clear()
        proxy.reset_counts()
    yield
    for proxy in (setup.source_proxy, setup.target_proxy):
        proxy.clear()


@dataclass
class Pushed:
    repository: str
    image: Image


@pytest.fixture
def pushed(setup: Setup, images: ImageBuilder) -> Pushed:
    """A fresh image in a repository of its own on the source."""
    repository = f"faults/app{next(_repositories)}"
    image = images.docker_image([1_200_000, 150_000])
    push_image(images, image, setup.source.host, repository, "v1")
    return Pushed(repository, image)


def start_job(
    make_service: MakeService, setup: Setup, repository: str, **settings: object
) -> tuple[JobService, int]:
    values: dict[str, object] = {
        "registry_url": setup.source_proxy.url,
        "registry_read_timeout_s": SHORT_READ_TIMEOUT_S,
        "retry_delay": 0.05,
        "retry_delay_max": 0.2,
        "max_retries": 3,
    }
    values.update(settings)
    service = make_service(**values)
    store = service.store
    project = store.add(Project(name=repository.split("/", 1)[0]))
    target = store.add(ReplicationTarget(name="dr-site", url=setup.target_proxy.url))
    assert project.id is not None and target.id is not None
    policy = store.add(ReplicationPolicy(project_id=project.id, target_id=target.id, name="dr"))
    assert policy.id is not None
    (job_id,) = service.replicate(policy.id, repository, ("v1",))
    return service, job_id


def job_log(service: JobService, job_id: int) -> str:
    path = Path(job_log_path(service.settings.log_dir, job_id))
    return path.read_text() if path.exists() else ""


def blob_on(server: RegistryServer, repository: str, digest: str) -> str | None:
    """The digest of what ``server`` sends for the blob, None when it has none."""
    answer = httpx.get(f"{server.url}/v2/{repository}/blobs/{digest}", follow_redirects=True)
    if answer.status_code == 404:
        return None
    answer.raise_for_status()
    return "sha256:" + hashlib.sha256(answer.content).hexdigest()


def tag_on(server: RegistryServer, repository: str, tag: str) -> str | None:
    answer = httpx.head(
        f"{server.url}/v2/{repository}/manifests/{tag}",
        headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json, "
            "application/vnd.oci.image.manifest.v1+json"
        },
    )
    return answer.headers.get("docker-content-digest") if answer.status_code == 200 else None


def assert_no_tag_on_a_wrong_or_missing_blob(setup: Setup, pushed: Pushed) -> None:
    """A tag on the target is the source's manifest, and every blob it names is there
    with the right bytes."""
    if tag_on(setup.target, pushed.repository, "v1") is None:
        return
    assert skopeo_digest(setup.target.host, pushed.repository, "v1") == skopeo_digest(
        setup.source.host, pushed.repository, "v1"
    )
    for blob in pushed.image.all_blobs():
        assert blob_on(setup.target, pushed.repository, blob.digest) == blob.digest


def assert_copied(setup: Setup, pushed: Pushed) -> None:
    assert tag_on(setup.target, pushed.repository, "v1") is not None
    assert_no_tag_on_a_wrong_or_missing_blob(setup, pushed)


# -- faults a job survives ----------------------------------------------------------------


def _big_layer(image: Image) -> str:
    """The 1.2 MB layer's digest: a fault that strikes after some bytes of a body must
    meet a body that long."""
    return image.blobs[1].digest


def _small_layer(image: Image) -> str:
    return image.blobs[2].digest


SURVIVED: list[tuple[str, FaultFor]] = [
    ("source", lambda i: Fault.reset(400_000, method="GET", path=_big_layer(i))),
    ("target", lambda i: Fault.reset(300_000, method="PATCH", on="request")),
    ("target", lambda i: Fault.reset(None, method="PATCH")),
    ("target", lambda i: Fault.reset(None, method="PUT", path=r"/blobs/uploads/")),
    ("source", lambda i: Fault.stall(60, 200_000, method="GET", path=_big_layer(i))),
    ("target", lambda i: Fault.stall(60, None, method="PATCH")),
    ("source", lambda i: Fault.trickle(100_000, method="GET", path=_small_layer(i))),
    ("source", lambda i: Fault.truncate(500_000, method="GET", path=_big_layer(i))),
    ("target", lambda i: Fault.status(500, 502, 503, method="PATCH")),
    ("source", lambda i: Fault.status(500, 502, 503, method="GET", path="/manifests/")),
    ("source", lambda i: Fault.status(429, retry_after="1", method="GET", path=BLOB_GET)),
    ("target", lambda i: Fault.status(429, 429, retry_after="1", method="HEAD")),
    ("source", lambda i: Fault.flip(654_321, method="GET", path=_big_layer(i))),
    ("target", lambda i: Fault.flip(1000, method="PATCH", on="request")),
]
SURVIVED_IDS = [
    "source-reset-mid-blob",
    "target-reset-mid-upload",
    "target-upload-answer-lost",
    "target-commit-answer-lost",
    "source-stall-60s-mid-blob",
    "target-stall-60s-before-upload-answer",
    "source-trickle-100KBps",
    "source-truncated-blob",
    "target-500-502-503-burst",
    "source-500-502-503-burst",
    "source-429-retry-after",
    "target-429-retry-after",
    "source-flipped-byte",
    "target-flipped-byte",
]


@pytest.mark.parametrize(("side", "fault_for"), SURVIVED, ids=SURVIVED_IDS)
def test_a_job_meeting_the_fault_finishes_with_the_source_digests_on_the_target(
    side: str, fault_for: FaultFor, setup: Setup, pushed: Pushed, make_service: MakeService
) -> None:
    proxy = setup.proxy(side)
    proxy.add(fault_for(pushed.image))
    service, job_id = start_job(make_service, setup, pushed.repository)

    status = service.wait("replication", job_id, JOB_TIMEOUT_S)

    log = job_log(service, job_id)
    assert proxy.fired, f"the fault was not applied; job {status}: {log}"
    assert status == Status.FINISHED, log
    assert "state retrying" not in log, "the fault was survived inside the step"
    assert_copied(setup, pushed)


def test_a_source_answer_broken_off_mid_blob_resumes_and_sends_no_byte_twice(
    setup: Setup, pushed: Pushed, make_service: MakeService
) -> None:
    layer = pushed.image.blobs[1]
    setup.source_proxy.add(Fault.reset(600_000, method="GET", path=layer.digest, times=2))
    service, job_id = start_job(make_service, setup, pushed.repository)

    status = service.wait("replication", job_id, JOB_TIMEOUT_S)

    log = job_log(service, job_id)
    assert status == Status.FINISHED, log
    assert len(setup.source_proxy.fired) == 2
    assert f"blob {layer.digest} ({layer.size} bytes) sent" in log
    assert "source asked again 2 time(s)" in log
    size = sum(blob.size for blob in pushed.image.all_blobs())
    assert f" {size} bytes sent;" in log, "the target got each byte once"
    # The source sent each byte at most once too (what the resets cut off, again: at
    # most all 600,000 bytes, when the reset came before the copy read any), besides
    # the heads of its answers.
    assert setup.source_proxy.bytes_to_clients < size + 2 * 600_000 + 16 * 1024
    assert_copied(setup, pushed)


def test_a_run_that_stored_blobs_before_failing_is_retried_beyond_max_retries(
    setup: Setup, pushed: Pushed, make_service: MakeService
) -> None:
    # The big layer's download fails more often than a step tries it; the small blobs
    # land meanwhile, so the failed run made progress and its retry is free.
    layer = pushed.image.blobs[1]
    setup.source_proxy.add(Fault.status(503, method="GET", path=layer.digest, times=5))
    service, job_id = start_job(make_service, setup, pushed.repository, max_retries=0)

    status = service.wait("replication", job_id, JOB_TIMEOUT_S)

    log = job_log(service, job_id)
    assert status == Status.FINISHED, log
    assert "state retrying" in log
    for blob in pushed.image.all_blobs():
        if blob.digest != layer.digest:
            assert f"blob {blob.digest} ({blob.size} bytes) skipped: already on the target" in log
    assert_copied(setup, pushed)


def test_random_500s_and_dropped_connections_on_both_registries_end_in_equal_digests(
    setup: Setup, images: ImageBuilder, make_service: MakeService
) -> None:
    repository = f"faults/app{next(_repositories)}"
    image = images.docker_image([2_000_000, 1_000_000, 300_000])
    push_image(images, image, setup.source.host, repository, "v1")
    setup.source_proxy.randomly(0.10, 0.05, seed=7)
    setup.target_proxy.randomly(0.10, 0.05, seed=8)
    service, job_id = start_job(make_service, setup, repository, max_retries=10)

    status = service.wait("replication", job_id, JOB_TIMEOUT_S)

    assert setup.source_proxy.fired or setup.target_proxy.fired
    assert status == Status.FINISHED, job_log(service, job_id)
    assert_copied(setup, Pushed(repository, image))


# -- faults that do not pass -----------------------------------------------------------


def test_a_blob_whose_bytes_never_match_its_digest_ends_in_error_naming_the_digest(
    setup: Setup, pushed: Pushed, make_service: MakeService
) -> None:
    layer = pushed.image.blobs[1]
    setup.source_proxy.add(Fault.flip(4321, method="GET", path=layer.digest, times=None))
    service, job_id = start_job(make_service, setup, pushed.repository)

    status = service.wait("replication", job_id, JOB_TIMEOUT_S)

    log = job_log(service, job_id)
    assert status == Status.ERROR, log
    assert f"copy blob {pushed.repository}@{layer.digest} at {setup.source_proxy.url}" in log
    assert ": content has digest sha256:" in log
    assert tag_on(setup.target, pushed.repository, "v1") is None
    assert blob_on(setup.target, pushed.repository, layer.digest) is None


def test_a_target_that_answers_every_upload_with_503_ends_in_error_naming_the_status(
    setup: Setup, pushed: Pushed, make_service: MakeService
) -> None:
    setup.target_proxy.add(Fault.status(503, method="PATCH", times=None))
    service, job_id = start_job(make_service, setup, pushed.repository, max_retries=0)

    status = service.wait("replication", job_id, JOB_TIMEOUT_S)

    log = job_log(service, job_id)
    assert status == Status.ERROR, log
    assert "upload blob chunk" in log and "HTTP 503" in log
    assert tag_on(setup.target, pushed.repository, "v1") is None


# -- a stop during a fault -------------------------------------------------------------

STOPPED_DURING: list[tuple[str, FaultFor]] = [
    ("source", lambda i: Fault.stall(60, 200_000, method="GET", path=_big_layer(i))),
    ("target", lambda i: Fault.stall(60, None, method="PATCH")),
    ("source", lambda i: Fault.trickle(100_000, method="GET", path=_big_layer(i))),
    ("source", lambda i: Fault.reset(400_000, method="GET", path=_big_layer(i), times=None)),
    ("source", lambda i: Fault.truncate(400_000, method="GET", path=_big_layer(i), times=None)),
    ("target", lambda i: Fault.status(503, method="PATCH", times=None)),
    ("source", lambda i: Fault.status(429, retry_after="8", method="GET", path=BLOB_GET)),
    ("source", lambda i: Fault.flip(654_321, method="GET", path=_big_layer(i), times=None)),
]
STOPPED_IDS = [
    "source-stall-60s-mid-blob",
    "target-stall-60s-before-upload-answer",
    "source-trickle-100KBps",
    "source-resets-mid-blob",
    "source-truncated-blobs",
    "target-503-to-every-upload",
    "source-429-retry-after-8s",
    "source-flipped-byte-every-time",
]


@pytest.mark.parametrize(("side", "fault_for"), STOPPED_DURING, ids=STOPPED_IDS)
def test_a_stop_during_the_fault_ends_the_job_stopped_within_a_second(
    side: str, fault_for: FaultFor, setup: Setup, pushed: Pushed, make_service: MakeService
) -> None:
    proxy = setup.proxy(side)
    proxy.add(fault_for(pushed.image))
    # A read timeout far longer than the test: only the stop can end a stalled request.
    service, job_id = start_job(
        make_service, setup, pushed.repository, registry_read_timeout_s=30.0
    )
    proxy.wait_fired(1, timeout_s=20)

    asked = time.monotonic()
    service.stop("replication", job_id)
    status = service.wait("replication", job_id, 10)
    took = time.monotonic() - asked

    assert status == Status.STOPPED, job_log(service, job_id)
    assert took < STOP_WITHIN_S, f"stopped after {took:.2f} s"
    assert_no_tag_on_a_wrong_or_missing_blob(setup, pushed)
