"""Manifest media types, digests, and the parsed view of a manifest's raw bytes."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ACCEPT_MANIFESTS",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_MEDIA_TYPES",
    "MEDIA_TYPE_DOCKER_LIST",
    "MEDIA_TYPE_DOCKER_MANIFEST",
    "MEDIA_TYPE_OCI_INDEX",
    "MEDIA_TYPE_OCI_MANIFEST",
    "Descriptor",
    "Manifest",
    "compute_digest",
    "is_digest",
]

MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json"

#: The four manifest types this client reads and writes, image manifests first.
MANIFEST_MEDIA_TYPES = (
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_LIST,
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
)
#: Types whose manifest lists child manifests rather than blobs.
INDEX_MEDIA_TYPES = frozenset({MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_OCI_INDEX})
#: The ``Accept`` header sent with every manifest request: distribution 2.8 answers 400
#: without one and hides an OCI index from a client that does not accept it.
ACCEPT_MANIFESTS = ", ".join(MANIFEST_MEDIA_TYPES)

_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


def is_digest(reference: str) -> bool:
    """Whether ``reference`` is a digest (``sha256:<hex>``) rather than a tag."""
    return _DIGEST_RE.match(reference) is not None


def compute_digest(content: bytes, algorithm: str = "sha256") -> str:
    """``algorithm:hex`` of ``content``."""
    return f"{algorithm}:{hashlib.new(algorithm, content).hexdigest()}"


@dataclass(frozen=True)
class Descriptor:
    """A reference from a manifest to a blob or to a child manifest.

    ``size`` is in bytes; ``platform`` is ``os/architecture[/variant]`` for an index's
    children and ``None`` elsewhere.
    """

    media_type: str
    digest: str
    size: int
    platform: str | None = None


def _descriptor(entry: Any, where: str) -> Descriptor:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not an object")
    digest, size = entry.get("digest"), entry.get("size")
    if not isinstance(digest, str) or not is_digest(digest):
        raise ValueError(f"{where} has no valid digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"{where} has no valid size")
    media_type = entry.get("mediaType")
    platform = None
    plat = entry.get("platform")
    if isinstance(plat, dict):
        parts = [plat.get("os"), plat.get("architecture"), plat.get("variant")]
        platform = "/".join(p for p in parts if isinstance(p, str) and p) or None
    return Descriptor(
        media_type=media_type if isinstance(media_type, str) else "",
        digest=digest,
        size=size,
        platform=platform,
    )


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as stored: its raw bytes, media type and digest.

    The bytes are what is pushed again, so the digest is preserved. Build one with
    :meth:`parse`, which checks that the bytes are a manifest of a known type.
    """

    media_type: str
    content: bytes = field(repr=False)
    digest: str
    _children: tuple[Descriptor, ...] = field(repr=False, compare=False)
    _blobs: tuple[Descriptor, ...] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, content: bytes, media_type: str | None = None) -> Manifest:
        """Parse raw manifest bytes; ``media_type`` is the ``Content-Type`` they came with.

        Without a usable ``media_type`` the document's ``mediaType`` field decides, then
        its shape (``manifests`` → OCI index, ``config`` → OCI manifest).
        Raises ``ValueError`` when the bytes are not such a manifest.
        """
        try:
            doc = json.loads(content)
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        mt = (media_type or "").split(";")[0].strip()
        if mt not in MANIFEST_MEDIA_TYPES:
            declared = doc.get("mediaType")
            if isinstance(declared, str) and declared in MANIFEST_MEDIA_TYPES:
                mt = declared
            elif "manifests" in doc:
                mt = MEDIA_TYPE_OCI_INDEX
            elif "config" in doc:
                mt = MEDIA_TYPE_OCI_MANIFEST
            else:
                raise ValueError(f"unsupported manifest type {media_type or declared!r}")
        if doc.get("schemaVersion") != 2:
            raise ValueError(f"schemaVersion is {doc.get('schemaVersion')!r}, not 2")
        children: tuple[Descriptor, ...] = ()
        blobs: tuple[Descriptor, ...] = ()
        if mt in INDEX_MEDIA_TYPES:
            entries = doc.get("manifests")
            if not isinstance(entries, list):
                raise ValueError("index has no 'manifests' list")
            children = tuple(_descriptor(e, f"manifests[{i}]") for i, e in enumerate(entries))
        else:
            layers = doc.get("layers")
            if not isinstance(layers, list):
                raise ValueError("manifest has no 'layers' list")
            blobs = (
                _descriptor(doc.get("config"), "config"),
                *(_descriptor(e, f"layers[{i}]") for i, e in enumerate(layers)),
            )
        return cls(mt, content, compute_digest(content), children, blobs)

    @property
    def is_index(self) -> bool:
        """Whether this is a Docker manifest list or an OCI index."""
        return self.media_type in INDEX_MEDIA_TYPES

    def children(self) -> list[Descriptor]:
        """Child manifests of an index or list, in document order; empty for an image."""
        return list(self._children)

    def blobs(self) -> list[Descriptor]:
        """Config then layers of an image manifest, with sizes; empty for an index."""
        return list(self._blobs)
