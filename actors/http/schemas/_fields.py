"""The field types and limits every body shares, and the base models of requests and
responses."""

from __future__ import annotations

import urllib.parse
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

from model.catalog import MAX_TARGET_PASSWORD_BYTES, MAX_TARGET_URL_CHARS

#: The largest id a table holds (PostgreSQL's ``integer``).
MAX_ID = 2**31 - 1
#: Bytes a target password may have: its ciphertext (``<enc-v2>`` or ``<enc-v1>``) must
#: fit Harbor 1.4's 128-character column.
MAX_PASSWORD_BYTES = MAX_TARGET_PASSWORD_BYTES

# The distribution spec's grammar (as model.names), for the OpenAPI document.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_PATTERN = rf"^{_COMPONENT}(?:/{_COMPONENT})*$"
TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
_NO_NUL = r"^[^\x00]*$"

# 1 to 65535, no leading zero (port 0 is no port a registry listens on).
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
# A path segment other than "." and "..": printable ASCII but "#", "/" and "?".
_SEGMENT = r'(?:[-!"$-,0->@-~][!"$-.0->@-~]*|\.[-!"$-,0->@-~][!"$-.0->@-~]*|\.\.[!"$-.0->@-~]+)?'
#: A registry URL as :func:`check_target_url` takes it (host names and IPv4 addresses).
TARGET_URL_PATTERN = rf"^https?://[A-Za-z0-9.-]+(?::{_PORT})?(?:/{_SEGMENT})*$"


def _json_integer(value: object) -> object:
    """JSON has one number type: ``3.0`` is the integer 3, as JSON Schema says; ``3.5``
    stays a float, and is refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Id = Annotated[int, Field(ge=0, le=MAX_ID), BeforeValidator(_json_integer)]
Name = Annotated[str, Field(min_length=1, pattern=_PRINTABLE)]
Repository = Annotated[str, Field(min_length=1, max_length=255, pattern=REPOSITORY_PATTERN)]
Tag = Annotated[str, Field(min_length=1, max_length=128, pattern=TAG_PATTERN)]
ProjectName = Annotated[str, Field(min_length=1, max_length=255, pattern=rf"^{_COMPONENT}$")]
TargetName = Annotated[Name, Field(max_length=64)]
PolicyName = Annotated[Name, Field(max_length=256)]
Description = Annotated[str, Field(max_length=2048, pattern=_NO_NUL)]
Username = Annotated[str, Field(max_length=255, pattern=_PRINTABLE)]


def check_target_url(value: str) -> str:
    """A registry URL: ``http`` or ``https``, a host, a port other than 0, no user
    info, query, fragment or dot segment (``.`` or ``..``, percent-encoded or not: a
    client or proxy resolves them to another path than the one given); returned without
    a trailing slash. Raises ``ValueError`` saying what is wrong."""
    if any(not "!" <= c <= "~" for c in value):
        raise ValueError("must be printable ASCII without spaces (percent-encode the others)")
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError as exc:
        raise ValueError(f"is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain a user name or password (set username/password)")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.port == 0:
        raise ValueError("must not use port 0 (leave the port out for the scheme's own)")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    if any(urllib.parse.unquote(s) in (".", "..") for s in parts.path.split("/")):
        raise ValueError("must not have '.' or '..' path segments")
    return value.rstrip("/")


def _check_password(value: SecretStr) -> SecretStr:
    secret = value.get_secret_value()
    if "\x00" in secret:
        raise ValueError("must not contain NUL characters")
    if len(secret.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        raise ValueError(f"must be at most {MAX_PASSWORD_BYTES} bytes")
    return value


def _checked_url(value: object) -> object:
    # Before the pattern, so that a refusal says what is wrong in words.
    return (
        check_target_url(value)
        if isinstance(value, str) and len(value) <= MAX_TARGET_URL_CHARS
        else value
    )


TargetUrl = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TARGET_URL_CHARS, pattern=TARGET_URL_PATTERN),
    BeforeValidator(_checked_url),
]
Password = Annotated[
    SecretStr,
    Field(
        json_schema_extra={
            "writeOnly": True,
            "maxLength": MAX_PASSWORD_BYTES // 4,
            "pattern": _NO_NUL,
        }
    ),
    AfterValidator(_check_password),
]


class _In(BaseModel):
    """A request body: strict types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)
