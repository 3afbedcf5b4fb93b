"""What a scan request becomes: the row of the job to queue, checked."""

from __future__ import annotations

from typing import Any

from model.errors import InvalidRequest
from model.names import check_repository, check_tags

__all__ = ["scan_row"]


def scan_row(repository: str, tag: str, digest: str | None = None) -> dict[str, Any]:
    """The row of a scan of ``repository:tag`` (at ``digest`` when known); raises
    :class:`InvalidRequest` naming the bad field."""
    check_repository(repository)
    (tag,) = check_tags([tag], "tag")
    if digest is not None and not (isinstance(digest, str) and digest.startswith("sha256:")):
        raise InvalidRequest("digest", f"must be a sha256: digest, got {digest!r}")
    return {"repository": repository, "tag": tag, "digest": digest or ""}
