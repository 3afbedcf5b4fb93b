"""Validation of what callers name: repositories, tags, kinds, ids."""

from __future__ import annotations

import re
from collections.abc import Iterable

from model.errors import InvalidRequest

__all__ = [
    "RESERVED_KIND_NAMES",
    "check_id",
    "check_kind_name",
    "check_repository",
    "check_tags",
]

#: Names no job kind may have: the pool statistics, an object keyed by kind, have
#: these keys for the nodes sharing the database and their totals.
RESERVED_KIND_NAMES = ("nodes", "totals")

# The distribution spec's grammar for repository names and tags.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_KIND = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_MAX_REPOSITORY = 255


def check_id(value: object, field: str = "id") -> int:
    """``value`` as a non-negative int; raises :class:`InvalidRequest` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(field, f"must be an integer, got {value!r}")
    if value < 0:
        raise InvalidRequest(field, f"must not be negative, got {value}")
    return value


def check_repository(value: object, field: str = "repository") -> str:
    """A repository name as the distribution spec allows (``project/name``)."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest(field, "must be a non-empty repository name")
    if len(value) > _MAX_REPOSITORY or not _REPOSITORY.fullmatch(value):
        raise InvalidRequest(
            field,
            f"{value!r} is not a valid repository name "
            "(lowercase letters, digits and separators . _ __ - between /-separated parts)",
        )
    return value


def check_tags(values: Iterable[object], field: str = "tags") -> list[str]:
    """Tags as the distribution spec allows; duplicates removed, order kept."""
    if isinstance(values, str):
        raise InvalidRequest(field, "must be a list of tags, not a string")
    tags: list[str] = []
    for index, tag in enumerate(values):
        if not isinstance(tag, str) or not tag:
            raise InvalidRequest(f"{field}[{index}]", "must be a non-empty tag")
        if not _TAG.fullmatch(tag):
            raise InvalidRequest(f"{field}[{index}]", f"{tag!r} is not a valid tag")
        if tag not in tags:
            tags.append(tag)
    return tags


def check_kind_name(value: str) -> str:
    """A job kind name: lowercase letter, then letters, digits, ``_`` or ``-``; not one
    of :data:`RESERVED_KIND_NAMES`."""
    if not _KIND.fullmatch(value):
        raise InvalidRequest("kind", f"{value!r} is not a valid kind name")
    if value in RESERVED_KIND_NAMES:
        raise InvalidRequest(
            "kind",
            f"{value!r} is reserved: the pool statistics (GET /api/stats) keep the names "
            f"{', '.join(map(repr, RESERVED_KIND_NAMES))} for the nodes and their totals",
        )
    return value
