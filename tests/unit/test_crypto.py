from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from model.crypto import V1_PREFIX, V2_PREFIX, SecretBox, load_key
from model.errors import ConfigError, DecryptionError

KEY = b"0123456789abcdef"


def harbor_v1_encrypt(plain: str, key: bytes) -> str:
    """Harbor 1.4's ReversibleEncrypt: <enc-v1> + base64(iv + AES-CFB(key, iv, plain))."""
    iv = os.urandom(16)
    encryptor = Cipher(algorithms.AES(key), CFB(iv)).encryptor()
    return (
        V1_PREFIX
        + base64.b64encode(iv + encryptor.update(plain.encode()) + encryptor.finalize()).decode()
    )


def test_encrypted_passwords_round_trip_and_never_repeat() -> None:
    box = SecretBox(KEY)
    first, second = box.encrypt("s3cret!"), box.encrypt("s3cret!")
    assert first.startswith(V2_PREFIX) and "s3cret" not in first
    assert first != second
    assert box.decrypt(first) == box.decrypt(second) == "s3cret!"


def test_values_encrypted_by_the_original_decrypt() -> None:
    stored = harbor_v1_encrypt("Harbor12345", KEY)
    assert SecretBox(KEY).decrypt(stored) == "Harbor12345"


def test_plain_base64_values_decrypt_as_the_original_falls_back() -> None:
    assert SecretBox(KEY).decrypt(base64.b64encode(b"pass word").decode()) == "pass word"


def test_a_wrong_key_is_a_clear_error_for_new_values() -> None:
    stored = SecretBox(KEY).encrypt("s3cret!")
    with pytest.raises(DecryptionError, match="not the one it was encrypted with"):
        SecretBox(b"another key 0000").decrypt(stored)


def test_a_wrong_key_is_a_clear_error_for_original_values() -> None:
    stored = harbor_v1_encrypt("Harbor12345-a-longer-password", KEY)
    with pytest.raises(DecryptionError, match="not the one it was encrypted with"):
        SecretBox(b"fedcba9876543210").decrypt(stored)


def test_tampered_values_are_refused() -> None:
    stored = SecretBox(KEY).encrypt("s3cret!")
    raw = bytearray(base64.b64decode(stored[len(V2_PREFIX) :]))
    raw[-1] ^= 1
    with pytest.raises(DecryptionError):
        SecretBox(KEY).decrypt(V2_PREFIX + base64.b64encode(bytes(raw)).decode())
    with pytest.raises(DecryptionError, match="not valid base64"):
        SecretBox(KEY).decrypt(V2_PREFIX + "***")


def test_a_missing_key_file_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "key"
    key = load_key(path)
    assert len(key) == 16
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path) == key


def test_an_empty_or_absent_key_file_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"\n")
    with pytest.raises(ConfigError, match="key_path"):
        load_key(tmp_path / "empty")
    with pytest.raises(ConfigError, match=r"key_path.*does not exist"):
        load_key(tmp_path / "absent", create=False)


#: "Harbor12345" under KEY with the IV 00 01 … 0f, computed outside this code by
#: ``openssl enc -aes-128-cfb -K <KEY in hex> -iv 000102030405060708090a0b0c0d0e0f``.
OPENSSL_V1 = "<enc-v1>AAECAwQFBgcICQoLDA0OD+gY65KNzY8kyqGm"


def test_a_value_another_aes_cfb_implementation_made_decrypts() -> None:
    assert SecretBox(KEY).decrypt(OPENSSL_V1) == "Harbor12345"


def test_with_the_enc_v1_format_new_values_are_harbors_and_decrypt_as_harbor_would() -> None:
    box = SecretBox(KEY, "enc-v1")
    first, second = box.encrypt("Harbor12345"), box.encrypt("Harbor12345")
    assert first.startswith(V1_PREFIX) and first != second
    # Harbor's ReversibleDecrypt: base64 after the prefix, the IV first, AES-CFB.
    blob = base64.b64decode(first[len(V1_PREFIX) :])
    decryptor = Cipher(algorithms.AES(KEY), CFB(blob[:16])).decryptor()
    assert (decryptor.update(blob[16:]) + decryptor.finalize()).decode() == "Harbor12345"
    # Both formats are still read, whatever the write format.
    assert box.decrypt(SecretBox(KEY).encrypt("v2 value")) == "v2 value"
    assert SecretBox(KEY).decrypt(first) == "Harbor12345"


def test_the_enc_v1_format_refuses_a_key_aes_cannot_take_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"password_format.*16, 24 or 32 bytes, it holds 10"):
        SecretBox(b"0123456789", "enc-v1")
    with pytest.raises(ConfigError, match=r"password_format.*enc-v2, enc-v1"):
        SecretBox(KEY, "enc-v3")
    assert SecretBox(b"0123456789").encrypt("x").startswith(V2_PREFIX)


def test_processes_creating_the_key_file_at_once_all_read_the_one_key(tmp_path: Path) -> None:
    import multiprocessing

    path = tmp_path / "keys" / "key"
    context = multiprocessing.get_context("fork")
    with context.Pool(8) as pool:
        keys = pool.map(_load_created, [str(path)] * 32)
    assert len(set(keys)) == 1 and keys[0] == path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["key"]


def _load_created(path: str) -> bytes:
    return load_key(Path(path))
