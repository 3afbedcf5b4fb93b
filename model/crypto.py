"""Target passwords at rest.

New values are ``<enc-v2>`` + base64(nonce ‖ AES-256-GCM ciphertext ‖ tag) under a key
derived (HKDF-SHA256) from the key file. The original's ``<enc-v1>`` values
(base64(iv ‖ AES-CFB ciphertext), the key file's bytes used as the AES key) and plain
base64 values still decrypt, so an existing database keeps working; with the setting
``password_format = "enc-v1"`` new values are ``<enc-v1>`` too, which a Harbor 1.4 UI
sharing the database reads (it reads no other format): then the key file is Harbor's
secret key, which Harbor's own code uses whole as the AES key, so it must exist (it is
never created) and hold 16, 24 or 32 bytes. Neither the key nor a password ever appears
in an error message.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from model.errors import ConfigError, DecryptionError

__all__ = ["V1_PREFIX", "V2_PREFIX", "WRITE_FORMATS", "SecretBox", "load_key", "service_key"]

V1_PREFIX = "<enc-v1>"
V2_PREFIX = "<enc-v2>"
_NONCE_BYTES = 12
_AES_BLOCK_BYTES = 16
#: The formats new values may be written in (the setting ``password_format``).
WRITE_FORMATS = ("enc-v2", "enc-v1")
_AES_KEY_BYTES = (16, 24, 32)


def load_key(path: Path, *, create: bool = True) -> bytes:
    """The key in ``path`` (surrounding whitespace removed).

    When the file is missing and ``create`` is set, a new random 16-character key is
    written with mode 0600, the original's key format. Raises :class:`ConfigError`
    naming ``key_path`` when the file cannot be read or is empty.
    """
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        if not create:
            raise ConfigError("key_path", f"key file {path} does not exist") from None
        key = _create_key(path)
    except OSError as exc:
        raise ConfigError("key_path", f"cannot read key file {path}: {exc.strerror}") from None
    if not key:
        raise ConfigError("key_path", f"key file {path} is empty")
    return key


def _create_key(path: Path) -> bytes:
    """Writes a new key to ``path`` whole or not at all: written to a file of its own,
    then linked into place, so that several processes starting at once never read a
    key file half written, and all end up with the one key that won."""
    key = secrets.token_hex(8).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(key)
                out.flush()
                os.fsync(out.fileno())
            os.link(draft, path)
        except FileExistsError:
            key = path.read_bytes().strip()  # another process made it first: its key
        finally:
            draft.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError("key_path", f"cannot write key file {path}: {exc.strerror}") from None
    return key


def service_key(path: Path, encrypted: int, write_format: str = "enc-v2") -> bytes:
    """The key in ``path``; a new one is made only when no stored password needs the
    old one (a new key would make every encrypted password unreadable), and never for
    ``write_format`` ``enc-v1``, whose key is the secret key of the Harbor UI that
    shares the database (a new one would write passwords that Harbor cannot read)."""
    try:
        return load_key(path, create=encrypted == 0 and write_format != "enc-v1")
    except ConfigError:
        if path.exists():
            raise
        if encrypted:
            raise ConfigError(
                "key_path",
                f"the key file {path} does not exist, and the database holds {encrypted} "
                "target passwords encrypted with it: restore the key file (or point "
                "key_path at it); a new key could not decrypt them",
            ) from None
        if write_format == "enc-v1":
            raise ConfigError(
                "key_path",
                f"the key file {path} does not exist: password_format enc-v1 writes target "
                "passwords with Harbor's secret key, so key_path must name that file (the "
                "host's /data/secretkey, /etc/ui/key in Harbor's containers); none is created",
            ) from None
        raise


class SecretBox:
    """Encrypts and decrypts secrets with one key."""

    def __init__(self, key: bytes, write_format: str = "enc-v2") -> None:
        if write_format not in WRITE_FORMATS:
            raise ConfigError(
                "password_format",
                f"must be one of {', '.join(WRITE_FORMATS)}, not {write_format!r}",
            )
        if write_format == "enc-v1" and len(key) not in _AES_KEY_BYTES:
            raise ConfigError(
                "password_format",
                "enc-v1 uses the key file's bytes as the AES key, as Harbor 1.4 does: the key "
                f"file (key_path) must hold 16, 24 or 32 bytes, it holds {len(key)}",
            )
        self._raw = key
        self.write_format = write_format
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"jobservice target password"
        ).derive(key)
        self._gcm = AESGCM(derived)

    def encrypt(self, plaintext: str) -> str:
        """``<enc-v2>`` + base64(nonce ‖ ciphertext ‖ tag); with ``write_format``
        ``enc-v1``, Harbor 1.4's ``<enc-v1>`` + base64(iv ‖ AES-CFB ciphertext)."""
        if self.write_format == "enc-v1":
            iv = os.urandom(_AES_BLOCK_BYTES)
            encryptor = Cipher(algorithms.AES(self._raw), CFB(iv)).encryptor()
            body = encryptor.update(plaintext.encode()) + encryptor.finalize()
            return V1_PREFIX + base64.b64encode(iv + body).decode()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._gcm.encrypt(nonce, plaintext.encode(), None)
        return V2_PREFIX + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, stored: str) -> str:
        """The plaintext of a stored value of any of the three formats.

        Raises :class:`DecryptionError` when the value is malformed or the key is wrong.
        """
        if stored.startswith(V2_PREFIX):
            blob = _b64(stored[len(V2_PREFIX) :])
            if len(blob) < _NONCE_BYTES + 16:
                raise DecryptionError("encrypted password is too short")
            try:
                return self._gcm.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], None).decode()
            except InvalidTag:
                raise DecryptionError(
                    "cannot decrypt password: the key file is not the one it was encrypted with"
                ) from None
        if stored.startswith(V1_PREFIX):
            return self._decrypt_v1(_b64(stored[len(V1_PREFIX) :]))
        try:
            return _b64(stored).decode()
        except UnicodeDecodeError:
            raise DecryptionError("stored password is base64 but not text") from None

    def _decrypt_v1(self, blob: bytes) -> str:
        if len(self._raw) not in _AES_KEY_BYTES:
            raise DecryptionError(
                "<enc-v1> passwords need a key of 16, 24 or 32 bytes; "
                f"the key file has {len(self._raw)}"
            )
        if len(blob) < _AES_BLOCK_BYTES:
            raise DecryptionError("encrypted password is too short")
        iv, body = blob[:_AES_BLOCK_BYTES], blob[_AES_BLOCK_BYTES:]
        decryptor = Cipher(algorithms.AES(self._raw), CFB(iv)).decryptor()
        plain = decryptor.update(body) + decryptor.finalize()
        # CFB carries no authentication tag: a wrong key yields noise, which is almost
        # never valid printable UTF-8. Refuse it rather than hand garbage to a registry.
        try:
            text = plain.decode()
        except UnicodeDecodeError:
            text = ""
        if plain and (not text or not text.isprintable()):
            raise DecryptionError(
                "cannot decrypt <enc-v1> password: "
                "the key file is not the one it was encrypted with"
            )
        return text


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptionError("stored password is not valid base64") from None
