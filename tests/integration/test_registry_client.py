"""The registry client against real registries (Debian's docker-registry 2.8)."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from collections.abc import Callable, Iterator

import httpx
import pytest
from faultproxy import Fault, FaultProxy
from registries import (
    AuthRegistry,
    Image,
    ImageBuilder,
    RegistryPair,
    RegistryServer,
    TokenRegistry,
    TokenSigner,
    htpasswd_auth,
    push_image,
    skopeo_digest,
)

from model.errors import RetryableError
from model.registry import (
    BlobCopier,
    DigestMismatchError,
    InvalidManifestError,
    Manifest,
    RegistryAuthError,
    RegistryAuthExpiredError,
    RegistryClient,
    RegistryError,
    RegistryNotFoundError,
    RegistryUnavailableError,
)

MiB = 1024 * 1024


class CountingTransport(httpx.HTTPTransport):
    """Records ``(method, path)`` of every request the client sends."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        return super().handle_request(request)


class LengthTransport(httpx.HTTPTransport):
    """Records the ``Content-Length`` of every ``PATCH`` the client sends."""

    def __init__(self) -> None:
        super().__init__()
        self.patches: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH":
            self.patches.append(int(request.headers["content-length"]))
        return super().handle_request(request)


def copy_image(
    src: RegistryClient,
    src_repo: str,
    dst: RegistryClient,
    dst_repo: str,
    tag: str,
    *,
    step_bytes: int = MiB,
) -> list[str]:
    """Copy ``src_repo:tag`` with its children and blobs; returns the blobs copied."""
    copied: list[str] = []

    def copy(reference: str) -> Manifest:
        manifest = src.get_manifest(src_repo, reference)
        for child in manifest.children():
            dst.put_manifest(dst_repo, child.digest, copy(child.digest))
        for blob in manifest.blobs():
            if not dst.blob_exists(dst_repo, blob.digest):
                copier = BlobCopier(src, src_repo, dst, dst_repo, blob.digest, size=blob.size)
                copier.run(step_bytes)
                copied.append(blob.digest)
        return manifest

    dst.put_manifest(dst_repo, tag, copy(tag))
    return copied


def chunks_of(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """``data`` in pieces of ``size`` bytes, as a one-shot iterator."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def session_gone(location: str) -> bool:
    """Whether the registry no longer knows the upload session at ``location``."""
    answer = httpx.get(location)
    return answer.status_code == 404 and "BLOB_UPLOAD_UNKNOWN" in answer.text


def push_to(reg: AuthRegistry, images: ImageBuilder, image: Image, repo: str) -> None:
    push_image(images, image, reg.server.host, repo, "v1", creds=reg.creds)


def uploads_in_progress(server: RegistryServer, repository: str) -> list[str]:
    """Upload sessions whose data the registry still keeps (a cancelled session leaves
    an empty ``hashstates`` folder behind in distribution 2.8, but no ``data``)."""
    folder = server.storage / "docker/registry/v2/repositories" / repository / "_uploads"
    return sorted(p.parent.name for p in folder.glob("*/data"))


@pytest.fixture
def client(registry: RegistryServer) -> Iterator[RegistryClient]:
    with RegistryClient(registry.url) as client:
        yield client


@pytest.fixture
def pair_clients(
    registry_pair: RegistryPair,
) -> Iterator[tuple[RegistryClient, RegistryClient]]:
    with (
        RegistryClient(registry_pair.source.url) as src,
        RegistryClient(registry_pair.target.url) as dst,
    ):
        yield src, dst


# -- reading -----------------------------------------------------------------------


def test_ping_answers_on_a_running_registry(client: RegistryClient) -> None:
    client.ping()


def test_list_tags_returns_every_tag_sorted(
    registry: RegistryServer, client: RegistryClient, images: ImageBuilder
) -> None:
    image = images.docker_image()
    tags = ["v10", "latest", "b-1", "v2", "a"]
    for tag in tags:
        push_image(images, image, registry.host, "lib/tags", tag)

    assert client.list_tags("lib/tags") == sorted(tags)


def test_list_tags_of_an_unknown_repository_raises_not_found(client: RegistryClient) -> None:
    with pytest.raises(RegistryNotFoundError) as info:
        client.list_tags("no/such-repo")

    assert info.value.status == 404
    assert info.value.code == "NAME_UNKNOWN"
    assert not isinstance(info.value, RetryableError)


def test_catalog_follows_link_pagination_two_repositories_per_page(
    registry: RegistryServer, images: ImageBuilder
) -> None:
    image = images.oci_image()
    repos = ["lib/e", "lib/a", "other/c", "lib/d", "lib/b"]
    for repo in repos:
        push_image(images, image, registry.host, repo, "v1")
    transport = CountingTransport()
    client = RegistryClient(registry.url, transport=transport)

    assert client.catalog(page_size=2) == sorted(repos)
    assert [p for m, p in transport.requests if p == "/v2/_catalog"] == ["/v2/_catalog"] * 3
    assert client.catalog(prefix="lib/", page_size=2) == ["lib/a", "lib/b", "lib/d", "lib/e"]


def test_manifest_head_digest_equals_skopeo_digest(
    registry: RegistryServer, client: RegistryClient, images: ImageBuilder
) -> None:
    for name, image in {
        "docker": images.docker_image(),
        "oci": images.oci_image(),
        "index": images.oci_index(),
        "list": images.docker_manifest_list(),
    }.items():
        push_image(images, image, registry.host, f"lib/{name}", "v1")

        assert client.manifest_digest(f"lib/{name}", "v1") == skopeo_digest(
            registry.host, f"lib/{name}", "v1"
        )
        assert client.manifest_digest(f"lib/{name}", "v1") == image.digest
    assert client.manifest_digest("lib/docker", "no-such-tag") is None
    assert client.manifest_digest("no/such-repo", "v1") is None


def test_manifest_helpers_list_children_and_blobs_with_sizes(
    registry: RegistryServer, client: RegistryClient, images: ImageBuilder
) -> None:
    index = images.oci_index(archs=("amd64", "arm64", "s390x"))
    push_image(images, index, registry.host, "lib/multi", "v1")

    manifest = client.get_manifest("lib/multi", "v1")

    assert manifest.is_index and manifest.content == index.manifest
    assert [c.digest for c in manifest.children()] == [c.digest for c in index.children]
    assert [c.platform for c in manifest.children()] == [
        "linux/amd64",
        "linux/arm64",
        "linux/s390x",
    ]
    child = client.get_manifest("lib/multi", index.children[0].digest)
    assert not child.is_index and child.children() == []
    assert [(b.digest, b.size) for b in child.blobs()] == [
        (b.digest, b.size) for b in index.children[0].blobs
    ]


# -- copying -----------------------------------------------------------------------


BUILDERS: dict[str, Callable[[ImageBuilder], Image]] = {
    "docker-schema2": lambda b: b.docker_image((2048, 70_000)),
    "oci-image": lambda b: b.oci_image((4096, 3 * MiB)),
    "oci-index": lambda b: b.oci_index(("amd64", "arm64")),
    "docker-manifest-list": lambda b: b.docker_manifest_list(("amd64", "arm64", "ppc64le")),
}


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_copy_with_the_client_keeps_manifest_digests_identical(
    kind: str,
    registry_pair: RegistryPair,
    pair_clients: tuple[RegistryClient, RegistryClient],
    images: ImageBuilder,
) -> None:
    source, target = registry_pair.source, registry_pair.target
    image = BUILDERS[kind](images)
    push_image(images, image, source.host, "src/app", "1.0")
    src, dst = pair_clients

    copy_image(src, "src/app", dst, "dst/app", "1.0", step_bytes=MiB)

    assert skopeo_digest(target.host, "dst/app", "1.0") == image.digest
    assert skopeo_digest(source.host, "src/app", "1.0") == image.digest
    assert dst.manifest_digest("dst/app", "1.0") == image.digest
    for child in image.children:
        assert dst.manifest_digest("dst/app", child.digest) == child.digest
    for blob in image.all_blobs():
        assert dst.blob_exists("dst/app", blob.digest)


def test_tags_sharing_layers_copy_the_shared_layers_once(
    registry_pair: RegistryPair,
    pair_clients: tuple[RegistryClient, RegistryClient],
    images: ImageBuilder,
) -> None:
    base = images.random_layer(50_000)
    first = images.docker_image((base, 1000))
    second = images.docker_image((base, 2000))
    push_image(images, first, registry_pair.source.host, "src/app", "1")
    push_image(images, second, registry_pair.source.host, "src/app", "2")
    src, dst = pair_clients

    copied_first = copy_image(src, "src/app", dst, "dst/app", "1")
    copied_second = copy_image(src, "src/app", dst, "dst/app", "2")

    assert base.digest in copied_first
    assert base.digest not in copied_second
    assert len(copied_second) == 2  # its own config and top layer
    assert dst.list_tags("dst/app") == ["1", "2"]


def test_blob_copy_moves_at_most_max_bytes_per_step(
    registry_pair: RegistryPair, images: ImageBuilder
) -> None:
    image = images.oci_image((MiB + 123,))
    push_image(images, image, registry_pair.source.host, "src/app", "v1")
    layer = image.blobs[1]
    transport = CountingTransport()
    src = RegistryClient(registry_pair.source.url)
    dst = RegistryClient(registry_pair.target.url, transport=transport)
    copier = BlobCopier(src, "src/app", dst, "dst/app", layer.digest, size=layer.size)

    progress = []
    while not copier.step(256 * 1024):
        progress.append(copier.copied)

    assert all(b - a <= 256 * 1024 for a, b in zip([0, *progress], progress, strict=False))
    assert copier.done and copier.copied == layer.size
    patches = [r for r in transport.requests if r[0] == "PATCH"]
    assert len(patches) == -(-layer.size // (256 * 1024))
    assert dst.blob_exists("dst/app", layer.digest)


def test_a_blob_goes_in_the_fewest_patches_a_step_allows_so_a_cut_last_patch_risks_less(
    registry_pair: RegistryPair, images: ImageBuilder
) -> None:
    layer = images.random_layer(3 * MiB, compresslevel=0)
    image = images.docker_image((layer,))
    push_image(images, image, registry_pair.source.host, "src/app", "v1")
    # Steps that leave a 1000-byte tail: 3 full PATCHes and a short one, were the blob
    # cut at the bound; a cut of that last PATCH would lose 3 steps for 1000 bytes.
    step = (layer.size - 1000) // 3
    quarter = -(-layer.size // 4)
    transport = LengthTransport()
    with FaultProxy(registry_pair.target.host) as proxy:
        src = RegistryClient(registry_pair.source.url)
        dst = RegistryClient(proxy.url, transport=transport)
        copier = BlobCopier(src, "src/app", dst, "dst/app", layer.digest, size=layer.size)
        for _ in range(3):
            assert copier.step(step) is False
        proxy.reset_counts()
        proxy.add(Fault.reset(1000, method="PATCH", on="request"))

        while not copier.step(step):
            pass

        assert proxy.fired and "reset after 1000 bytes" in proxy.fired[0]
        resent = proxy.bytes_from_clients

    assert transport.patches[:4] == [quarter] * 3 + [layer.size - 3 * quarter]
    assert all(length <= step for length in transport.patches)
    assert copier.done and copier.restarts + copier.resumes == 1
    assert RegistryClient(registry_pair.target.url).blob_exists("dst/app", layer.digest)
    # The cut lost at most the 3 quarters the session held, not 3 steps.
    assert resent <= layer.size + 3 * quarter + 1000 + 16 * 1024


def test_blob_copy_in_bounded_steps_then_cancel_leaves_no_blob(
    registry_pair: RegistryPair,
    pair_clients: tuple[RegistryClient, RegistryClient],
    images: ImageBuilder,
) -> None:
    image = images.docker_image((2 * MiB,))
    push_image(images, image, registry_pair.source.host, "src/app", "v1")
    layer = image.blobs[1]
    src, dst = pair_clients
    copier = BlobCopier(src, "src/app", dst, "dst/app", layer.digest, size=layer.size)

    assert copier.step(256 * 1024) is False
    assert copier.step(256 * 1024) is False
    assert 256 * 1024 < copier.copied <= 512 * 1024  # the blob's PATCHes are of one size
    assert uploads_in_progress(registry_pair.target, "dst/app") != []
    assert copier.upload is not None
    location = copier.upload.location
    assert not session_gone(location)
    copier.cancel()

    assert not dst.blob_exists("dst/app", layer.digest)
    assert uploads_in_progress(registry_pair.target, "dst/app") == []
    assert session_gone(location)
    with pytest.raises(RuntimeError):
        copier.step()


def test_upload_session_commits_a_blob_written_in_chunks(client: RegistryClient) -> None:
    data = bytes(range(256)) * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    with client.start_upload("lib/chunks") as upload:
        first_location = upload.location
        for start in range(0, len(data), 100_000):
            upload.write(data[start : start + 100_000])
        assert upload.location != first_location
        assert upload.commit(digest) == digest

    assert client.blob_exists("lib/chunks", digest)
    with client.open_blob("lib/chunks", digest) as stream:
        assert stream.size == len(data)
        assert b"".join(stream) == data


def test_a_streamed_write_is_one_patch_whose_bytes_are_hashed_on_the_way(
    registry: RegistryServer,
) -> None:
    data = bytes(range(256)) * 4000 + b"tail"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    transport = CountingTransport()
    client = RegistryClient(registry.url, transport=transport)

    with client.start_upload("lib/streamed") as upload:
        first_location = upload.location
        upload.write_stream(chunks_of(data[:600_000]), 600_000)
        upload.write_stream(chunks_of(data[600_000:], 100_000), len(data) - 600_000)
        assert upload.location != first_location
        assert upload.offset == len(data) and upload.digest == digest
        assert upload.commit(digest) == digest

    assert [m for m, _ in transport.requests if m == "PATCH"] == ["PATCH", "PATCH"]
    with client.open_blob("lib/streamed", digest) as stream:
        assert b"".join(stream) == data


def test_a_streamed_write_that_gives_fewer_bytes_than_announced_is_refused(
    client: RegistryClient,
) -> None:
    upload = client.start_upload("lib/short")

    with pytest.raises(ValueError, match="not the 2000 announced"):
        upload.write_stream(chunks_of(b"x" * 1000), 2000)

    with pytest.raises(RuntimeError, match="a write failed"):
        upload.write(b"more")
    assert upload.offset == 0


def test_a_401_to_a_streamed_upload_after_a_password_change_is_a_clear_auth_error(
    htpasswd_registry: AuthRegistry,
) -> None:
    reg = htpasswd_registry
    client = RegistryClient(reg.url, username=reg.username, password=reg.password)
    upload = client.start_upload("lib/app")
    htpasswd_auth(reg.server.root, {reg.username: "the-new-password"})

    with pytest.raises(RegistryAuthError) as info:
        upload.write_stream(chunks_of(bytes(4 * MiB)), 4 * MiB)

    error = info.value
    assert not isinstance(error, RetryableError)
    assert error.status == 401 and error.registry == reg.url
    assert "upload blob chunk lib/app" in str(error)
    assert "refused the credentials in the middle of a streamed upload" in str(error)
    assert "cannot be sent again" in str(error)
    assert reg.password not in str(error)


def test_a_401_to_a_streamed_upload_with_an_untrusted_token_is_retryable_and_a_new_try_passes(
    token_registry: TokenRegistry,
) -> None:
    reg, tokens = token_registry, token_registry.tokens
    client = RegistryClient(reg.url, username=reg.username, password=reg.password)
    now = [1000.0]
    client._auth._clock = lambda: now[0]
    upload = client.start_upload("lib/app")
    # The token server moves to a key the registry does not trust, and the client's
    # token expires: the PATCH goes out with a new token the registry refuses.
    trusted, tokens.signer = tokens.signer, TokenSigner.generate()
    now[0] += 3600

    with pytest.raises(RegistryAuthExpiredError) as info:
        upload.write_stream(chunks_of(bytes(4 * MiB)), 4 * MiB)

    error = info.value
    assert isinstance(error, RetryableError) and isinstance(error, RegistryAuthError)
    assert error.status == 401 and error.code == "UNAUTHORIZED"
    assert "refused the credentials in the middle of a streamed upload" in str(error)
    assert "new credentials were obtained for a next try" in str(error)
    assert "Bearer" not in str(error) and "eyJ" not in str(error)
    tokens.signer = trusted
    now[0] += 3600
    data = b"retried" * 1000
    with client.start_upload("lib/app") as again:
        again.write_stream(chunks_of(data, 1000), len(data))
        again.commit(again.digest)
    assert client.blob_exists("lib/app", again.digest)


def test_mount_from_another_repository_on_the_target_links_the_blob(
    registry: RegistryServer, client: RegistryClient, images: ImageBuilder
) -> None:
    image = images.docker_image((5000,))
    push_image(images, image, registry.host, "team/base", "v1")
    layer = image.blobs[1]

    assert client.mount_blob("team/app", layer.digest, "team/base") is True
    assert client.blob_exists("team/app", layer.digest)

    missing = "sha256:" + "0" * 64
    assert client.mount_blob("team/other", missing, "team/base") is False
    assert not client.blob_exists("team/other", missing)
    assert uploads_in_progress(registry, "team/other") == []


def test_digest_mismatch_of_a_corrupted_source_blob_is_not_retryable(
    registry_pair: RegistryPair,
    pair_clients: tuple[RegistryClient, RegistryClient],
    images: ImageBuilder,
) -> None:
    image = images.docker_image((300_000,))
    push_image(images, image, registry_pair.source.host, "src/app", "v1")
    layer = image.blobs[1]
    stored = registry_pair.source.blob_path(layer.digest)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    src, dst = pair_clients

    with pytest.raises(DigestMismatchError) as info:
        BlobCopier(src, "src/app", dst, "dst/app", layer.digest).run(64 * 1024)

    assert not isinstance(info.value, RetryableError)
    assert info.value.expected == layer.digest and info.value.actual != layer.digest
    assert registry_pair.source.url in str(info.value)
    assert not dst.blob_exists("dst/app", layer.digest)
    assert uploads_in_progress(registry_pair.target, "dst/app") == []


def test_corrupted_manifest_fetched_by_digest_is_detected(
    registry: RegistryServer, client: RegistryClient, images: ImageBuilder
) -> None:
    image = images.oci_image()
    push_image(images, image, registry.host, "lib/app", "v1")
    stored = registry.blob_path(image.digest)
    stored.write_bytes(json.dumps(json.loads(stored.read_bytes())).encode())  # same JSON

    with pytest.raises(DigestMismatchError) as info:
        client.get_manifest("lib/app", image.digest)

    assert info.value.expected == image.digest
    assert not isinstance(info.value, RetryableError)


def test_put_manifest_under_a_digest_that_is_not_its_own_is_refused(
    client: RegistryClient, images: ImageBuilder
) -> None:
    image = images.oci_image()
    manifest = Manifest.parse(image.manifest, image.media_type)

    with pytest.raises(DigestMismatchError):
        client.put_manifest("lib/app", "sha256:" + "1" * 64, manifest)


def test_manifest_list_before_its_children_is_refused_without_retry(
    client: RegistryClient, images: ImageBuilder
) -> None:
    index = images.docker_manifest_list()

    with pytest.raises(RegistryError) as info:
        client.put_manifest("lib/app", "v1", Manifest.parse(index.manifest))

    assert info.value.status == 400
    assert info.value.code == "MANIFEST_BLOB_UNKNOWN"
    assert not isinstance(info.value, RetryableError)


# -- deleting ----------------------------------------------------------------------


def test_delete_by_digest_removes_every_tag_pointing_at_it(
    registry: RegistryServer, client: RegistryClient, images: ImageBuilder
) -> None:
    doomed, kept = images.docker_image(), images.docker_image()
    push_image(images, doomed, registry.host, "lib/app", "a")
    push_image(images, doomed, registry.host, "lib/app", "b")
    push_image(images, kept, registry.host, "lib/app", "c")

    assert client.delete_manifest("lib/app", doomed.digest) is True

    assert client.list_tags("lib/app") == ["c"]
    assert client.manifest_digest("lib/app", "a") is None
    assert client.delete_manifest("lib/app", doomed.digest) is False
    with pytest.raises(ValueError):
        client.delete_manifest("lib/app", "c")


# -- authentication ----------------------------------------------------------------


def test_htpasswd_registry_accepts_right_credentials(
    htpasswd_registry: AuthRegistry, images: ImageBuilder
) -> None:
    image = images.docker_image()
    push_image(
        images, image, htpasswd_registry.server.host, "lib/app", "v1", creds=htpasswd_registry.creds
    )
    client = RegistryClient(
        htpasswd_registry.url,
        username=htpasswd_registry.username,
        password=htpasswd_registry.password,
    )

    client.ping()
    assert client.list_tags("lib/app") == ["v1"]
    assert client.manifest_digest("lib/app", "v1") == image.digest
    assert client.can_push("lib/app") is True


@pytest.mark.parametrize("password", ["wrong-password", None])
def test_htpasswd_registry_refuses_wrong_credentials_with_a_non_retryable_401(
    htpasswd_registry: AuthRegistry, password: str | None
) -> None:
    username = htpasswd_registry.username if password else None
    client = RegistryClient(htpasswd_registry.url, username=username, password=password)

    with pytest.raises(RegistryAuthError) as info:
        client.list_tags("lib/app")

    error = info.value
    assert not isinstance(error, RetryableError)
    assert error.status == 401 and error.registry == htpasswd_registry.url
    assert htpasswd_registry.url in str(error) and "401" in str(error)
    assert "lib/app" in str(error)
    assert htpasswd_registry.password not in str(error)
    assert client.can_push("lib/app") is False


def test_token_auth_works_and_tokens_are_cached_per_scope(
    token_registry: TokenRegistry, images: ImageBuilder
) -> None:
    image = images.oci_image()
    push_image(
        images, image, token_registry.server.host, "lib/app", "v1", creds=token_registry.creds
    )
    tokens = token_registry.tokens
    before = tokens.request_count
    client = RegistryClient(
        token_registry.url, username=token_registry.username, password=token_registry.password
    )

    client.ping()
    for _ in range(3):
        assert client.list_tags("lib/app") == ["v1"]
        assert client.get_manifest("lib/app", "v1").digest == image.digest
        assert client.blob_exists("lib/app", image.blobs[0].digest)

    assert tokens.request_count - before == 2  # one for /v2/, one for pull on lib/app
    assert client.tokens_fetched == 2
    assert all(r.account == token_registry.username for r in tokens.requests[before:])
    assert client.catalog() == ["lib/app"]
    assert client.can_push("lib/app") is True
    assert client.delete_manifest("lib/app", image.digest) is True


def test_tokens_are_fetched_again_once_expired(token_registry: TokenRegistry) -> None:
    token_registry.tokens.expires_in = 60
    client = RegistryClient(
        token_registry.url, username=token_registry.username, password=token_registry.password
    )
    now = [1000.0]
    client._auth._clock = lambda: now[0]

    client.ping()
    client.ping()
    assert client.tokens_fetched == 1
    now[0] += 61
    client.ping()

    assert client.tokens_fetched == 2


def test_token_server_answering_access_token_is_understood(
    token_registry: TokenRegistry,
) -> None:
    token_registry.tokens.token_field = "access_token"
    client = RegistryClient(
        token_registry.url, username=token_registry.username, password=token_registry.password
    )

    client.ping()
    assert client.can_push("lib/app") is True


def test_mount_on_a_token_registry_gets_one_token_for_both_repositories(
    token_registry: TokenRegistry, images: ImageBuilder
) -> None:
    image = images.docker_image()
    push_to(token_registry, images, image, "team/base")
    tokens = token_registry.tokens
    before = tokens.request_count
    client = RegistryClient(
        token_registry.url, username=token_registry.username, password=token_registry.password
    )

    # The registry's challenge names both repositories in one space-separated scope.
    assert client.mount_blob("team/app", image.blobs[1].digest, "team/base") is True

    assert tokens.request_count - before == 1
    # Distribution lists a scope's actions in no fixed order.
    asked = {
        s.rsplit(":", 1)[0]: sorted(s.rsplit(":", 1)[1].split(","))
        for s in tokens.requests[-1].scopes
    }
    assert asked == {"repository:team/app": ["pull", "push"], "repository:team/base": ["pull"]}
    assert client.blob_exists("team/app", image.blobs[1].digest)


def test_token_registry_reader_may_pull_but_not_push_and_wrong_password_is_refused(
    token_registry: TokenRegistry, images: ImageBuilder
) -> None:
    image = images.docker_image()
    push_image(
        images, image, token_registry.server.host, "lib/app", "v1", creds=token_registry.creds
    )
    reader = RegistryClient(
        token_registry.url,
        username=token_registry.reader,
        password=token_registry.reader_password,
    )
    assert reader.list_tags("lib/app") == ["v1"]
    assert reader.can_push("lib/app") is False

    intruder = RegistryClient(token_registry.url, username=token_registry.username, password="nope")
    with pytest.raises(RegistryAuthError) as info:
        intruder.list_tags("lib/app")

    assert not isinstance(info.value, RetryableError)
    assert info.value.status == 401 and "nope" not in str(info.value)


# -- failures ----------------------------------------------------------------------


def test_a_registry_that_is_down_gives_a_retryable_error(
    registry: RegistryServer, client: RegistryClient, images: ImageBuilder
) -> None:
    push_image(images, images.docker_image(), registry.host, "lib/app", "v1")
    registry.stop()

    with pytest.raises(RegistryUnavailableError) as info:
        client.list_tags("lib/app")

    assert isinstance(info.value, RetryableError)
    assert info.value.registry == registry.url and info.value.status is None
    registry.start()
    assert client.list_tags("lib/app") == ["v1"]


def test_a_source_going_down_mid_copy_gives_a_retryable_error(
    registry_pair: RegistryPair,
    pair_clients: tuple[RegistryClient, RegistryClient],
    images: ImageBuilder,
) -> None:
    # Bigger than what the loopback socket buffers can hold once the source is gone.
    layer = images.random_layer(64 * MiB, compresslevel=0)
    image = images.docker_image((layer,))
    push_image(images, image, registry_pair.source.host, "src/app", "v1")
    src, dst = pair_clients
    copier = BlobCopier(src, "src/app", dst, "dst/app", layer.digest, size=layer.size)
    copier.step(64 * 1024)
    registry_pair.source.stop()

    with pytest.raises(RegistryUnavailableError) as info:
        for _ in range(layer.size // MiB + 1):
            copier.step(MiB)

    assert isinstance(info.value, RetryableError)
    assert info.value.registry == registry_pair.source.url
    assert not dst.blob_exists("dst/app", layer.digest)
    # The PATCH under way was completed with filler, so the session could be deleted.
    assert uploads_in_progress(registry_pair.target, "dst/app") == []
    assert copier.upload is not None and session_gone(copier.upload.location)


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [(429, {"Retry-After": "7"}, 7.0), (503, {}, None), (500, {}, None)],
)
def test_overload_and_server_errors_are_retryable_and_honour_retry_after(
    status: int, headers: dict[str, str], retry_after: float | None
) -> None:
    body = {"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]}
    transport = httpx.MockTransport(lambda r: httpx.Response(status, headers=headers, json=body))
    client = RegistryClient("http://registry.test", transport=transport)

    with pytest.raises(RegistryUnavailableError) as info:
        client.get_manifest("lib/app", "v1")

    assert isinstance(info.value, RetryableError)
    assert info.value.status == status and info.value.retry_after == retry_after
    assert info.value.code == "TOOMANYREQUESTS"
    assert "lib/app:v1" in str(info.value) and "http://registry.test" in str(info.value)


def test_tag_pages_linked_by_the_registry_are_merged_and_sorted() -> None:
    pages = {
        None: (["zeta", "alpha"], '</v2/lib/app/tags/list?last=alpha&n=2>; rel="next"'),
        "alpha": (
            ["mid", "beta"],
            '<http://registry.test/v2/lib/app/tags/list?last=beta&n=2>; rel="next"',
        ),
        "beta": (["gamma"], None),
    }

    def answer(request: httpx.Request) -> httpx.Response:
        tags, link = pages[request.url.params.get("last")]
        headers = {"Link": link} if link else {}
        return httpx.Response(200, headers=headers, json={"name": "lib/app", "tags": tags})

    client = RegistryClient("http://registry.test", transport=httpx.MockTransport(answer))

    assert client.list_tags("lib/app") == ["alpha", "beta", "gamma", "mid", "zeta"]


def test_content_that_is_no_manifest_is_an_invalid_manifest_error() -> None:
    transport = httpx.MockTransport(
        lambda r: httpx.Response(200, headers={"Content-Type": "text/html"}, content=b"<html>")
    )
    client = RegistryClient("http://registry.test", transport=transport)

    with pytest.raises(InvalidManifestError) as info:
        client.get_manifest("lib/app", "v1")

    assert not isinstance(info.value, RetryableError)


# -- big blobs ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_200_mb_layer_is_streamed_in_steps_with_memory_far_below_a_step(
    registry_pair: RegistryPair,
    pair_clients: tuple[RegistryClient, RegistryClient],
    images: ImageBuilder,
) -> None:
    layer = images.random_layer(200 * MiB, compresslevel=0)
    image = images.docker_image((layer,))
    push_image(images, image, registry_pair.source.host, "src/big", "v1")
    src, dst = pair_clients

    step = 8 * MiB
    tracemalloc.start()
    try:
        copy_image(src, "src/big", dst, "dst/big", "v1", step_bytes=step)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Each step streams read chunks of 64 KiB: memory does not grow with the step.
    assert peak < step // 4, f"{peak} bytes"
    assert skopeo_digest(registry_pair.target.host, "dst/big", "v1") == image.digest
    assert dst.blob_exists("dst/big", layer.digest)
