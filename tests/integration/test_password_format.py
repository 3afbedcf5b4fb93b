"""The ``password_format`` setting through the service: targets saved by a service on a
SQLite file are ``<enc-v1>`` under Harbor's key when asked (what a Harbor 1.4 UI sharing
the database reads), ``<enc-v2>`` otherwise, and a bad key stops the start."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from harbor14 import decrypt_v1, encrypt_v1

from actors import JobService
from model.catalog import Catalog
from model.db.tables import ReplicationTarget
from model.errors import ConfigError
from model.settings import Settings

HARBOR_KEY = b"Hb4sEcReTkEy2018"


def _harbor_key(tmp_path: Path, key: bytes = HARBOR_KEY) -> Path:
    path = tmp_path / "secretkey"
    path.write_bytes(key)
    return path


def _stored_password(service: JobService, ident: int) -> str:
    return service.store.get(ReplicationTarget, ident).password


def test_enc_v1_targets_are_written_as_harbor_writes_them(
    make_service: Callable[..., JobService], tmp_path: Path
) -> None:
    service = make_service(key_path=_harbor_key(tmp_path), password_format="enc-v1")
    catalog = Catalog(service.store, service.box)
    added = catalog.add_target("t", "http://registry.example", "robot", "Harbor12345", False)
    stored = _stored_password(service, int(added.id or 0))
    assert stored.startswith("<enc-v1>")
    assert decrypt_v1(stored, HARBOR_KEY) == "Harbor12345"

    catalog.update_target(int(added.id or 0), password="changed-secret")
    stored = _stored_password(service, int(added.id or 0))
    assert stored.startswith("<enc-v1>")
    assert decrypt_v1(stored, HARBOR_KEY) == "changed-secret"

    # A password Harbor's UI saved reads here, whatever this service writes.
    harbors = catalog.add_target("h", "http://other.example", "u", "", False)
    service.store.update(
        ReplicationTarget, int(harbors.id or 0), password=encrypt_v1("from-harbor", HARBOR_KEY)
    )
    assert service.box.decrypt(_stored_password(service, int(harbors.id or 0))) == "from-harbor"


def test_a_database_written_in_enc_v2_keeps_working_after_a_switch_to_enc_v1(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    key = _harbor_key(tmp_path)
    first = JobService(make_settings(key_path=key)).start()
    try:
        added = Catalog(first.store, first.box).add_target(
            "t", "http://registry.example", "robot", "old-secret", False
        )
        ident = int(added.id or 0)
        assert _stored_password(first, ident).startswith("<enc-v2>")
    finally:
        first.shutdown(10)
    second = JobService(make_settings(key_path=key, password_format="enc-v1")).start()
    try:
        assert second.box.decrypt(_stored_password(second, ident)) == "old-secret"
        Catalog(second.store, second.box).update_target(ident, password="new-secret")
        assert decrypt_v1(_stored_password(second, ident), HARBOR_KEY) == "new-secret"
    finally:
        second.shutdown(10)


def test_the_default_stays_enc_v2(make_service: Callable[..., JobService]) -> None:
    service = make_service()
    added = Catalog(service.store, service.box).add_target(
        "t", "http://registry.example", "robot", "s3cret", False
    )
    assert _stored_password(service, int(added.id or 0)).startswith("<enc-v2>")


def test_enc_v1_refuses_to_start_without_harbors_key_file(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(key_path=tmp_path / "missing-key", password_format="enc-v1")
    with pytest.raises(ConfigError) as refused:
        JobService(settings).start()
    assert refused.value.setting == "key_path"
    assert "missing-key" in str(refused.value)
    assert not settings.key_path.exists()


def test_enc_v1_refuses_to_start_with_a_key_aes_cannot_take(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    key = b"not-a-16-byte-harbor-key"[:20]
    settings = make_settings(key_path=_harbor_key(tmp_path, key), password_format="enc-v1")
    with pytest.raises(ConfigError) as refused:
        JobService(settings).start()
    assert refused.value.setting == "password_format"
    assert "16, 24 or 32 bytes, it holds 20" in str(refused.value)
    assert key.decode() not in str(refused.value)
