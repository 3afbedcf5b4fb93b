"""Replication jobs through the whole engine (``JobService``) against real registries.

skopeo is the reference: after each replication ``skopeo inspect --raw`` of every tag
gives the same digest on source and target.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from registries import (
    AuthRegistry,
    Image,
    ImageBuilder,
    RegistryPair,
    RegistryServer,
    TokenRegistry,
    push_image,
    skopeo_digest,
    wait_until,
)

from actors import JobService
from model.db.tables import Project, ReplicationPolicy, ReplicationTarget
from model.joblog import job_log_path
from model.registry import RegistryClient
from model.replication import replication_stats
from model.status import Status

MiB = 1024 * 1024
#: Seconds a replication of small images may take (generous: CI machines are slow).
JOB_TIMEOUT_S = 60.0

MakeService = Callable[..., JobService]


def add_policy(
    service: JobService,
    target_url: str,
    *,
    username: str = "",
    password: str = "",
    project: str = "library",
) -> int:
    """A project, a target and a policy replicating the project to the target."""
    store = service.store
    proj = store.add(Project(name=project))
    target = store.add(
        ReplicationTarget(
            name="dr-site",
            url=target_url,
            username=username,
            password=service.box.encrypt(password) if password else "",
        )
    )
    assert proj.id is not None and target.id is not None
    policy = store.add(ReplicationPolicy(project_id=proj.id, target_id=target.id, name="to-dr"))
    assert policy.id is not None
    return policy.id


def job_log(service: JobService, job_id: int) -> str:
    path = Path(job_log_path(service.settings.log_dir, job_id))
    return path.read_text() if path.exists() else ""


def replicate(
    service: JobService,
    policy_id: int,
    repository: str,
    tags: tuple[str, ...] = (),
    operation: str = "transfer",
) -> int:
    (job_id,) = service.replicate(policy_id, repository, tags, operation)
    return job_id


def finish(service: JobService, job_id: int) -> str:
    """Waits for the job's end; fails with its log unless it finished."""
    status = service.wait("replication", job_id, JOB_TIMEOUT_S)
    assert status == Status.FINISHED, job_log(service, job_id)
    return job_log(service, job_id)


def assert_same_digests(
    source: RegistryServer, target: RegistryServer, repository: str, tags: list[str]
) -> None:
    for tag in tags:
        assert skopeo_digest(target.host, repository, tag) == skopeo_digest(
            source.host, repository, tag
        ), f"{repository}:{tag}"


def uploads_in_progress(server: RegistryServer, repository: str) -> list[str]:
    """Upload sessions the registry still keeps: a deleted one leaves only an empty
    ``hashstates`` folder behind in distribution 2.8, no ``data`` or ``startedat``."""
    folder = server.storage / "docker/registry/v2/repositories" / repository / "_uploads"
    return sorted(
        {p.parent.name for name in ("data", "startedat") for p in folder.glob(f"*/{name}")}
    )


def on_target(server: RegistryServer, repository: str, reference: str) -> str | None:
    with RegistryClient(server.url) as client:
        return client.manifest_digest(repository, reference)


def sent_blobs(log: str) -> list[str]:
    return re.findall(r"blob (sha256:[0-9a-f]+) \(\d+ bytes\) sent", log)


@pytest.fixture
def pair_service(registry_pair: RegistryPair, make_service: MakeService) -> JobService:
    return make_service(registry_url=registry_pair.source.url)


@pytest.fixture
def policy(pair_service: JobService, registry_pair: RegistryPair) -> int:
    return add_policy(pair_service, registry_pair.target.url)


# -- transfer ----------------------------------------------------------------------


def test_schema2_and_oci_images_and_tags_sharing_layers_keep_their_digests(
    registry_pair: RegistryPair, pair_service: JobService, policy: int, images: ImageBuilder
) -> None:
    src, dst = registry_pair.source, registry_pair.target
    shared = images.random_layer(300_000)
    pushed = {
        "v1": images.docker_image([shared, 2048]),
        "v2": images.oci_image([4096, 1024]),
        "v3": images.docker_image([shared, 8192]),
    }
    for tag, image in pushed.items():
        push_image(images, image, src.host, "library/app", tag)

    job_id = replicate(pair_service, policy, "library/app")
    log = finish(pair_service, job_id)

    assert_same_digests(src, dst, "library/app", sorted(pushed))
    assert f"blob {shared.digest} ({shared.size} bytes) skipped: already on the target" in log
    assert Counter(sent_blobs(log))[shared.digest] == 1
    for state in ("initialize", "check", "pull_manifest", "transfer_blob", "push_manifest"):
        assert f"state {state} " in log
    assert "state finished" in log
    for tag, image in pushed.items():
        assert f"manifest {image.digest} ({image.media_type}" in log
        assert f"pushed as library/app:{tag}" in log
    assert uploads_in_progress(dst, "library/app") == []


def test_later_tags_use_the_copy_slots_a_large_shared_layer_leaves_and_push_in_order(
    registry_pair: RegistryPair,
    pair_service: JobService,
    policy: int,
    images: ImageBuilder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 1 MiB steps: the 4 MiB base takes four steps, the small layers one.
    monkeypatch.setattr("model.replication._transfer.BLOB_STEP_BYTES", MiB)
    src, dst = registry_pair.source, registry_pair.target
    base = images.random_layer(4 * MiB)
    tags = [f"t{n}" for n in range(4)]
    own = {tag: images.random_layer(65_536) for tag in tags}
    for tag in tags:
        push_image(images, images.docker_image([base, own[tag]]), src.host, "library/app", tag)

    log = finish(pair_service, replicate(pair_service, policy, "library/app"))

    assert_same_digests(src, dst, "library/app", tags)
    assert Counter(sent_blobs(log))[base.digest] == 1
    pushes = [log.index(f"pushed as library/app:{tag}") for tag in tags]
    assert pushes == sorted(pushes)
    base_sent = log.index(f"blob {base.digest} ({base.size} bytes) sent")
    assert base_sent < pushes[0]
    # The next tag's own layer started while the base of the first was still going.
    assert log.index(f"blob {own['t1'].digest} ({own['t1'].size} bytes): sending") < base_sent
    assert uploads_in_progress(dst, "library/app") == []


def test_a_multi_platform_oci_index_and_a_docker_manifest_list_are_copied_whole(
    registry_pair: RegistryPair, pair_service: JobService, policy: int, images: ImageBuilder
) -> None:
    src, dst = registry_pair.source, registry_pair.target
    pushed: dict[str, Image] = {
        "oci": images.oci_index(("amd64", "arm64", "s390x")),
        "docker": images.docker_manifest_list(("amd64", "arm64")),
    }
    for tag, image in pushed.items():
        push_image(images, image, src.host, "library/multi", tag)

    log = finish(pair_service, replicate(pair_service, policy, "library/multi", ("oci", "docker")))

    assert_same_digests(src, dst, "library/multi", list(pushed))
    for image in pushed.values():
        for child in image.children:
            assert on_target(dst, "library/multi", child.digest) == child.digest
            assert f"pushed as library/multi@{child.digest}" in log
            # Every platform's blobs went along.
            for blob in child.blobs:
                assert blob.digest in log


def test_replicating_an_already_replicated_repository_sends_no_blob(
    registry_pair: RegistryPair, pair_service: JobService, policy: int, images: ImageBuilder
) -> None:
    src = registry_pair.source
    push_image(images, images.docker_image([4096, 1024]), src.host, "library/app", "v1")
    push_image(images, images.oci_index(), src.host, "library/app", "multi")
    finish(pair_service, replicate(pair_service, policy, "library/app"))
    sent_before = replication_stats(pair_service._context()).bytes_sent

    log = finish(pair_service, replicate(pair_service, policy, "library/app"))

    assert sent_blobs(log) == []
    assert "tag library/app:v1 skipped: the target has it already" in log
    assert "tag library/app:multi skipped: the target has it already" in log
    assert "0 blob(s) sent" in log and " 0 bytes sent" in log
    assert replication_stats(pair_service._context()).bytes_sent == sent_before


def test_a_tag_gone_from_the_source_is_skipped_with_a_log_line(
    registry_pair: RegistryPair, pair_service: JobService, policy: int, images: ImageBuilder
) -> None:
    src, dst = registry_pair.source, registry_pair.target
    push_image(images, images.docker_image(), src.host, "library/app", "v1")

    log = finish(pair_service, replicate(pair_service, policy, "library/app", ("gone", "v1")))

    assert "tag library/app:gone skipped: it is no longer in the source registry" in log
    assert_same_digests(src, dst, "library/app", ["v1"])
    assert on_target(dst, "library/app", "gone") is None


def test_a_stop_during_a_200_mb_blob_lands_before_the_blob_is_sent_and_leaves_no_tag(
    registry_pair: RegistryPair, pair_service: JobService, policy: int, images: ImageBuilder
) -> None:
    src, dst = registry_pair.source, registry_pair.target
    layer = images.random_layer(200 * MiB, compresslevel=0)
    push_image(images, images.docker_image([layer]), src.host, "library/big", "v1")
    job_id = replicate(pair_service, policy, "library/big", ("v1",))
    sending = f"blob {layer.digest} ({layer.size} bytes): sending"
    wait_until(lambda: sending in job_log(pair_service, job_id), timeout_s=30, what=sending)

    pair_service.stop("replication", job_id)

    assert pair_service.wait("replication", job_id, JOB_TIMEOUT_S) == Status.STOPPED
    log = job_log(pair_service, job_id)
    cancelled = re.search(
        rf"blob {layer.digest} \({layer.size} bytes\): upload cancelled after (\d+) bytes", log
    )
    assert cancelled is not None, log
    assert int(cancelled.group(1)) < layer.size
    summary = re.search(r"transfer stopped: .* (\d+) bytes sent", log)
    assert summary is not None and int(summary.group(1)) < layer.size
    assert on_target(dst, "library/big", "v1") is None
    assert uploads_in_progress(dst, "library/big") == [], log


def test_a_shutdown_during_a_200_mb_blob_hands_the_job_back_and_cancels_its_upload(
    registry_pair: RegistryPair, make_service: MakeService, images: ImageBuilder
) -> None:
    src, dst = registry_pair.source, registry_pair.target
    service = make_service(registry_url=src.url)
    policy = add_policy(service, dst.url)
    layer = images.random_layer(200 * MiB, compresslevel=0)
    push_image(images, images.docker_image([layer]), src.host, "library/big", "v1")
    job_id = replicate(service, policy, "library/big", ("v1",))
    sending = f"blob {layer.digest} ({layer.size} bytes): sending"
    wait_until(lambda: sending in job_log(service, job_id), timeout_s=30, what=sending)

    service.shutdown(10)

    log = job_log(service, job_id)
    assert "service shutting down in state transfer_blob: job handed back as pending" in log
    cancelled = re.search(
        rf"blob {layer.digest} \({layer.size} bytes\): upload cancelled after (\d+) bytes "
        r"\([0-9.]+ s\), job pending",
        log,
    )
    assert cancelled is not None, log
    assert int(cancelled.group(1)) < layer.size
    assert uploads_in_progress(dst, "library/big") == [], log
    assert on_target(dst, "library/big", "v1") is None
    # The next start resumes the job from scratch and finishes it.
    again = make_service(registry_url=src.url)
    finish(again, job_id)
    assert_same_digests(src, dst, "library/big", ["v1"])
    assert uploads_in_progress(dst, "library/big") == [], log


def test_the_source_going_down_sends_the_job_to_retrying_and_it_finishes_once_back(
    registry_pair: RegistryPair, make_service: MakeService, images: ImageBuilder
) -> None:
    src, dst = registry_pair.source, registry_pair.target
    service = make_service(
        registry_url=src.url, retry_delay=0.5, retry_delay_max=1.0, max_retries=30
    )
    policy = add_policy(service, dst.url)
    layer = images.random_layer(64 * MiB, compresslevel=0)
    push_image(images, images.docker_image([layer]), src.host, "library/app", "v1")
    push_image(images, images.docker_image([2048]), src.host, "library/app", "v2")
    job_id = replicate(service, policy, "library/app", ("v1", "v2"))
    sending = f"blob {layer.digest} ({layer.size} bytes): sending"
    wait_until(lambda: sending in job_log(service, job_id), timeout_s=30, what=sending)

    src.stop()
    wait_until(
        lambda: service.status("replication", job_id) == Status.RETRYING,
        timeout_s=JOB_TIMEOUT_S,
        what="job retrying",
    )
    src.start()

    log = finish(service, job_id)
    assert "will retry" in log
    assert_same_digests(src, dst, "library/app", ["v1", "v2"])
    # Blobs stored before the failure were not sent again by the retry.
    assert all(n == 1 for n in Counter(sent_blobs(log)).values()), log


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
def test_wrong_target_credentials_end_in_error_naming_the_target_and_the_status(
    auth: str,
    request: pytest.FixtureRequest,
    registry: RegistryServer,
    make_service: MakeService,
    images: ImageBuilder,
) -> None:
    target: AuthRegistry = request.getfixturevalue(f"{auth}_registry")
    push_image(images, images.docker_image(), registry.host, "library/app", "v1")
    service = make_service(registry_url=registry.url)
    policy = add_policy(service, target.url, username=target.username, password="not-the-pw")

    job_id = replicate(service, policy, "library/app")

    assert service.wait("replication", job_id, JOB_TIMEOUT_S) == Status.ERROR
    log = job_log(service, job_id)
    assert f"target 'dr-site' ({target.url}) refused the credentials of user 'alice'" in log
    assert "HTTP 401" in log
    assert "not-the-pw" not in log


def test_credentials_that_may_only_pull_end_in_error_before_any_blob_is_sent(
    registry: RegistryServer,
    token_registry: TokenRegistry,
    make_service: MakeService,
    images: ImageBuilder,
) -> None:
    push_image(images, images.docker_image(), registry.host, "library/app", "v1")
    service = make_service(registry_url=registry.url)
    reg = token_registry
    policy = add_policy(service, reg.url, username=reg.reader, password=reg.reader_password)

    job_id = replicate(service, policy, "library/app")

    assert service.wait("replication", job_id, JOB_TIMEOUT_S) == Status.ERROR
    log = job_log(service, job_id)
    assert f"target 'dr-site' ({reg.url}) does not let user 'bob' push to library/app" in log
    assert re.search(r"HTTP 40[13]", log)
    assert "state pull_manifest" not in log


def test_replication_between_registries_with_auth_logs_no_password_or_token(
    htpasswd_registry: AuthRegistry,
    token_registry: TokenRegistry,
    make_service: MakeService,
    images: ImageBuilder,
) -> None:
    src, dst = htpasswd_registry, token_registry
    push_image(
        images, images.docker_image([2048]), src.server.host, "library/app", "v1", creds=src.creds
    )
    service = make_service(
        registry_url=src.url, registry_username=src.username, registry_password=src.password
    )
    policy = add_policy(service, dst.url, username=dst.username, password=dst.password)

    log = finish(service, replicate(service, policy, "library/app"))

    assert skopeo_digest(dst.server.host, "library/app", "v1", creds=dst.creds) == skopeo_digest(
        src.server.host, "library/app", "v1", creds=src.creds
    )
    assert src.password not in log and dst.password not in log
    assert "Bearer" not in log and "eyJ" not in log  # no JWT
    assert dst.tokens.requests, "the token server was used"


def test_replicate_without_a_repository_makes_one_job_per_repository_of_the_project(
    registry_pair: RegistryPair, make_service: MakeService, images: ImageBuilder
) -> None:
    src, dst = registry_pair.source, registry_pair.target
    service = make_service(registry_url=src.url, max_job_workers=1)
    policy = add_policy(service, dst.url)
    base = images.random_layer(200_000)
    push_image(images, images.docker_image([base, 1024]), src.host, "library/a", "v1")
    push_image(images, images.oci_image([base, 2048]), src.host, "library/b", "v1")
    push_image(images, images.docker_image(), src.host, "other/c", "v1")

    job_ids = service.replicate(policy)

    assert len(job_ids) == 2
    logs = [finish(service, job_id) for job_id in job_ids]
    assert_same_digests(src, dst, "library/a", ["v1"])
    assert_same_digests(src, dst, "library/b", ["v1"])
    assert "transfer library/a from" in logs[0] and "transfer library/b from" in logs[1]
    assert on_target(dst, "other/c", "v1") is None
    # One worker: library/a ran first, so library/b linked the shared base instead.
    assert f"blob {base.digest} ({base.size} bytes) mounted from library/a" in logs[1]


# -- delete ------------------------------------------------------------------------


@pytest.fixture
def target_tags(registry_pair: RegistryPair, images: ImageBuilder) -> dict[str, Image]:
    """Tags on the target: v1 and v2 distinct, v3 and latest the same manifest."""
    dst = registry_pair.target
    shared = images.docker_image([1024])
    tags = {
        "v1": images.docker_image([2048]),
        "v2": images.oci_image([2048]),
        "v3": shared,
        "latest": shared,
    }
    for tag, image in tags.items():
        push_image(images, image, dst.host, "library/app", tag)
    return tags


def test_delete_removes_the_named_tags_by_digest_and_keeps_the_others(
    registry_pair: RegistryPair,
    pair_service: JobService,
    policy: int,
    target_tags: dict[str, Image],
) -> None:
    dst = registry_pair.target
    log = finish(
        pair_service, replicate(pair_service, policy, "library/app", ("v1", "v2"), "delete")
    )

    assert on_target(dst, "library/app", "v1") is None
    assert on_target(dst, "library/app", "v2") is None
    assert on_target(dst, "library/app", "v3") == target_tags["v3"].digest
    assert f"manifest {target_tags['v1'].digest} deleted with tag(s) v1" in log
    assert "state delete" in log


def test_delete_keeps_a_digest_shared_with_a_tag_the_job_does_not_name(
    registry_pair: RegistryPair,
    pair_service: JobService,
    policy: int,
    target_tags: dict[str, Image],
) -> None:
    dst = registry_pair.target
    job_id = replicate(pair_service, policy, "library/app", ("v3", "v1"), "delete")
    log = finish(pair_service, job_id)

    assert on_target(dst, "library/app", "v3") == target_tags["v3"].digest
    assert on_target(dst, "library/app", "latest") == target_tags["v3"].digest
    assert on_target(dst, "library/app", "v1") is None
    assert "tag(s) v3 of library/app not deleted" in log
    assert "also tagged latest" in log


def test_delete_of_a_missing_tag_or_repository_is_a_warning(
    registry_pair: RegistryPair,
    pair_service: JobService,
    policy: int,
    target_tags: dict[str, Image],
) -> None:
    dst = registry_pair.target
    log = finish(
        pair_service, replicate(pair_service, policy, "library/app", ("nope", "v2"), "delete")
    )
    assert "[WARNING] tag library/app:nope is not on the target" in log
    assert on_target(dst, "library/app", "v2") is None

    log = finish(pair_service, replicate(pair_service, policy, "library/none", ("v1",), "delete"))
    assert "[WARNING] repository library/none is not on the target" in log


def test_delete_without_tags_removes_every_tag_of_the_repository(
    registry_pair: RegistryPair,
    pair_service: JobService,
    policy: int,
    target_tags: dict[str, Image],
) -> None:
    dst = registry_pair.target
    log = finish(pair_service, replicate(pair_service, policy, "library/app", (), "delete"))

    for tag in target_tags:
        assert on_target(dst, "library/app", tag) is None
    assert "3 manifest(s) deleted, 0 kept" in log
