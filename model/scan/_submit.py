"""What a scan request becomes: the row of the job to queue, checked."""

from __future__ import annotations

from typing import Any

from model.errors import InvalidRequest
from model.names import check_repository, check_tags
from model.registry import RegistryClient
from model.scan._errors import ImageNotFound

__all__ = ["image_digest", "scan_row"]


def image_digest(client: RegistryClient, repository: str, tag: str) -> str:
    """The digest of ``repository:tag`` in the registry of ``client``; raises
    :class:`ImageNotFound` when it is not there."""
    digest = client.manifest_digest(repository, tag)
    if digest is None:
        raise ImageNotFound(client.url, repository, tag)
    return digest


def scan_row(repository: str, tag: str, digest: str | None = None) -> dict[str, Any]:
    """The row of a scan of ``repository:tag`` (at ``digest`` when known); raises
    :class:`InvalidRequest` naming the bad field."""
    check_repository(repository)
    (tag,) = check_tags([tag], "tag")
    if digest is not None and not (isinstance(digest, str) and digest.startswith("sha256:")):
        raise InvalidRequest("digest", f"must be a sha256: digest, got {digest!r}")
    return {"repository": repository, "tag": tag, "digest": digest or ""}
