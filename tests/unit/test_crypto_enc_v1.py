"""``password_format = "enc-v1"``: target passwords written the way Harbor 1.4's
``utils.ReversibleEncrypt`` writes them (src/common/utils/encrypt.go at v1.4.0):
``<enc-v1>`` + standard base64(16-byte random IV ‖ AES-CFB ciphertext), the AES key
being the bytes of Harbor's secret key file, read whole (``FileKeyProvider``)."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from model.crypto import V1_PREFIX, V2_PREFIX, SecretBox, service_key
from model.errors import ConfigError
from model.settings import load_settings

#: A key shaped like the one Harbor 1.4's installer (make/prepare) generates:
#: 16 letters and digits, no newline.
HARBOR_KEY = b"Hb4sEcReTkEy2018"
_IV_HEX = "f0e1d2c3b4a5968778695a4b3c2d1e0f"

#: Made outside this code with OpenSSL's AES-CFB (CFB128, the mode of Go's
#: cipher.NewCFBEncrypter), then the IV and the ciphertext joined and base64-encoded:
#:   printf '%s' PLAIN | openssl enc -aes-128-cfb -K $(printf Hb4sEcReTkEy2018 | xxd -p) \
#:       -iv f0e1d2c3b4a5968778695a4b3c2d1e0f | xxd -p
#:   "<enc-v1>" + base64(bytes.fromhex(IV + that output))
OPENSSL_VECTORS = {
    "Harbor12345": "<enc-v1>8OHSw7Sllod4aVpLPC0eD/WA+Ej34a2jGj/Q",
    "pässwörd/with:symbols": "<enc-v1>8OHSw7Sllod4aVpLPC0eD80iLlnr5F8nW2/KsK7iMRxBG1gE9vnw",
}
#: The same with a 32-byte key (AES-256, which Go's aes.NewCipher also takes) and a zero IV:
#: ``openssl enc -aes-256-cfb -K <hex of 0123456789abcdef0123456789ABCDEF> -iv 00…00``.
KEY_32 = b"0123456789abcdef0123456789ABCDEF"
OPENSSL_VECTOR_32 = "<enc-v1>AAAAAAAAAAAAAAAAAAAAAD07tbKGIfziP0s0"


@pytest.mark.parametrize("plain", sorted(OPENSSL_VECTORS))
def test_values_made_by_openssl_aes_cfb_decrypt(plain: str) -> None:
    assert SecretBox(HARBOR_KEY).decrypt(OPENSSL_VECTORS[plain]) == plain
    assert SecretBox(HARBOR_KEY, "enc-v1").decrypt(OPENSSL_VECTORS[plain]) == plain
    assert SecretBox(KEY_32, "enc-v1").decrypt(OPENSSL_VECTOR_32) == "Harbor12345"


@pytest.mark.parametrize("plain", ["Harbor12345", "pässwörd/with:symbols", "x", "p" * 62])
def test_enc_v1_values_round_trip_with_a_fresh_iv_each_time(plain: str) -> None:
    box = SecretBox(HARBOR_KEY, "enc-v1")
    first, second = box.encrypt(plain), box.encrypt(plain)
    assert first.startswith(V1_PREFIX) and second.startswith(V1_PREFIX)
    assert first != second
    if len(plain) > 3:
        assert plain not in first
    assert box.decrypt(first) == box.decrypt(second) == plain
    # The layout Harbor decodes: standard base64, the IV first, one byte per byte after.
    blob = base64.b64decode(first[len(V1_PREFIX) :], validate=True)
    assert len(blob) == 16 + len(plain.encode())
    # Harbor 1.4's password column holds 128 characters.
    assert len(first) <= 128


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_openssl_decrypts_what_the_enc_v1_format_writes() -> None:
    stored = SecretBox(HARBOR_KEY, "enc-v1").encrypt("pässwörd/with:symbols")
    blob = base64.b64decode(stored[len(V1_PREFIX) :])
    answer = subprocess.run(
        ["openssl", "enc", "-d", "-aes-128-cfb", "-K", HARBOR_KEY.hex(), "-iv", blob[:16].hex()],
        input=blob[16:],
        capture_output=True,
        check=True,
    )
    assert answer.stdout.decode() == "pässwörd/with:symbols"


def test_either_write_format_reads_both_formats() -> None:
    v1 = SecretBox(HARBOR_KEY, "enc-v1")
    v2 = SecretBox(HARBOR_KEY)
    assert v2.encrypt("a").startswith(V2_PREFIX)
    assert v1.decrypt(v2.encrypt("from v2")) == "from v2"
    assert v2.decrypt(v1.encrypt("from v1")) == "from v1"


@pytest.mark.parametrize("key", [b"short", b"0123456789abcdef0", b"x" * 33])
def test_an_enc_v1_key_aes_cannot_take_is_refused_naming_the_setting_not_the_key(
    key: bytes,
) -> None:
    with pytest.raises(ConfigError) as refused:
        SecretBox(key, "enc-v1")
    assert refused.value.setting == "password_format"
    message = str(refused.value)
    assert f"it holds {len(key)}" in message and "key_path" in message
    assert key.decode() not in message
    # The default format derives its key, so any non-empty key file does.
    assert SecretBox(key).encrypt("x").startswith(V2_PREFIX)


def test_an_unknown_write_format_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"'password_format'.*enc-v2, enc-v1.*'enc-v3'"):
        SecretBox(HARBOR_KEY, "enc-v3")


def test_the_setting_defaults_to_enc_v2_and_refuses_other_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings().password_format == "enc-v2"
    assert load_settings(password_format="enc-v1").password_format == "enc-v1"
    with pytest.raises(ConfigError) as refused:
        load_settings(password_format="aes")
    assert refused.value.setting == "password_format"
    assert "enc-v2" in str(refused.value) and "enc-v1" in str(refused.value)
    config = tmp_path / "jobservice.toml"
    config.write_text('password_format = "enc-v1"\n')
    assert load_settings(config_file=config).password_format == "enc-v1"
    monkeypatch.setenv("JOBSERVICE_PASSWORD_FORMAT", "ENC-V1")
    with pytest.raises(ConfigError, match="password_format"):
        load_settings()
    monkeypatch.setenv("JOBSERVICE_PASSWORD_FORMAT", "enc-v1")
    assert load_settings().password_format == "enc-v1"


def test_enc_v1_never_creates_a_key_file(tmp_path: Path) -> None:
    path = tmp_path / "secretkey"
    with pytest.raises(ConfigError) as refused:
        service_key(path, 0, "enc-v1")
    assert refused.value.setting == "key_path"
    assert str(path) in str(refused.value) and "enc-v1" in str(refused.value)
    assert not path.exists()
    # The database's own encrypted passwords take precedence in the explanation.
    with pytest.raises(ConfigError, match="holds 2 target passwords"):
        service_key(path, 2, "enc-v1")
    # enc-v2 still makes one for a database without encrypted passwords.
    assert len(service_key(path, 0)) == 16 and path.exists()


def test_enc_v1_uses_harbors_key_file_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "secretkey"
    path.write_bytes(HARBOR_KEY)
    key = service_key(path, 0, "enc-v1")
    assert key == HARBOR_KEY
    assert SecretBox(key, "enc-v1").decrypt(OPENSSL_VECTORS["Harbor12345"]) == "Harbor12345"
    assert path.read_bytes() == HARBOR_KEY
