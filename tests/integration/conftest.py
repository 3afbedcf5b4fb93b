"""Fixtures that start real registries (Debian's docker-registry) for integration tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from registries import (
    AuthRegistry,
    ImageBuilder,
    RegistryPair,
    RegistryServer,
    TokenRegistry,
    TokenServer,
    TokenSigner,
    htpasswd_auth,
)

#: Credentials of the htpasswd and token registries.
USER, PASSWORD = "alice", "alice-secret-pw"
READER, READER_PASSWORD = "bob", "bob-reader-pw"
TOKEN_SERVICE = "jobservice-test-registry"


def _started(root: Path, auth: dict[str, Any] | None = None) -> RegistryServer:
    server = RegistryServer(root, auth=auth)
    server.start()
    return server


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """An anonymous registry with empty storage."""
    server = _started(tmp_path / "registry")
    yield server
    server.stop()


@pytest.fixture
def registry_pair(tmp_path: Path) -> Iterator[RegistryPair]:
    """Two anonymous registries: a replication's source and target."""
    source = _started(tmp_path / "source")
    try:
        target = _started(tmp_path / "target")
    except BaseException:
        source.stop()
        raise
    yield RegistryPair(source, target)
    target.stop()
    source.stop()


@pytest.fixture
def htpasswd_registry(tmp_path: Path) -> Iterator[AuthRegistry]:
    """A registry with htpasswd (bcrypt) auth for two users."""
    root = tmp_path / "htpasswd-registry"
    auth = htpasswd_auth(root, {USER: PASSWORD, READER: READER_PASSWORD})
    server = _started(root, auth=auth)
    yield AuthRegistry(server, USER, PASSWORD, READER, READER_PASSWORD)
    server.stop()


@pytest.fixture(scope="session")
def token_signer() -> TokenSigner:
    """One RSA key and certificate for every token server of the session."""
    return TokenSigner.generate()


@pytest.fixture
def token_registry(tmp_path: Path, token_signer: TokenSigner) -> Iterator[TokenRegistry]:
    """A registry with token auth and its token server (this process, another thread).

    ``alice`` gets pull, push and delete; ``bob`` only pull.
    """
    tokens = TokenServer(
        token_signer,
        {
            USER: (PASSWORD, ("pull", "push", "delete", "catalog")),
            READER: (READER_PASSWORD, ("pull",)),
        },
    )
    tokens.start()
    root = tmp_path / "token-registry"
    try:
        server = _started(root, auth=tokens.registry_auth(root, TOKEN_SERVICE))
    except BaseException:
        tokens.stop()
        raise
    yield TokenRegistry(server, USER, PASSWORD, READER, READER_PASSWORD, tokens)
    server.stop()
    tokens.stop()


@pytest.fixture
def images(tmp_path: Path) -> ImageBuilder:
    """A builder of test images whose files live in this test's tmp_path."""
    return ImageBuilder(tmp_path / "images")
