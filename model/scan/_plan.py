"""What a scan looks at: the image a tag or digest names, its child images, their layers."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from model.registry import (
    INDEX_MEDIA_TYPES,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_MANIFEST,
    Manifest,
    RegistryClient,
    is_digest,
)
from model.scan._errors import ImageNotFound, NotAnImage

__all__ = ["ImagePlan", "Layer", "ScanPlan", "chain_names", "plan_scan", "resolve_digest"]

#: Media types of image layers (Docker schema2 and OCI); anything else is not an image.
LAYER_MEDIA_PREFIXES = ("application/vnd.docker.image.rootfs.", "application/vnd.oci.image.layer.")
#: Layers a registry does not hold (their ``urls`` point elsewhere): listed, not scanned.
_FOREIGN_MARKERS = ("foreign", "nondistributable")
#: The platform buildx gives the attestation manifests it puts into an index.
_ATTESTATION_PLATFORM = "unknown/unknown"
#: Indexes nested in an index are followed this deep.
_MAX_INDEX_DEPTH = 2


@dataclass(frozen=True)
class Layer:
    """One layer blob of an image."""

    digest: str
    size: int  #: bytes of the blob as stored (compressed)
    media_type: str


@dataclass(frozen=True)
class ImagePlan:
    """One image to scan: its manifest digest and its layers, base first."""

    digest: str
    media_type: str
    platform: str  #: ``os/arch[/variant]`` for a child of an index, "" otherwise
    layers: tuple[Layer, ...]  #: layers to scan, base first
    foreign: tuple[Layer, ...] = ()  #: foreign/non-distributable layers, not in the registry

    @property
    def name(self) -> str:
        """The digest, with the platform when there is one (for logs)."""
        return f"{self.digest} ({self.platform})" if self.platform else self.digest


@dataclass(frozen=True)
class ScanPlan:
    """Everything one scan job looks at.

    ``digest`` is the manifest the job names (an index's, for an index); ``images`` are
    the images under it: itself alone, or the children of an index in document order.
    """

    repository: str
    tag: str
    digest: str
    media_type: str
    images: tuple[ImagePlan, ...]
    index: bool = False

    def layers(self) -> list[Layer]:
        """Every layer to scan once, images in order, each base first (a layer two
        images share is listed once)."""
        seen: dict[str, Layer] = {}
        for image in self.images:
            for layer in image.layers:
                seen.setdefault(layer.digest, layer)
        return list(seen.values())


def resolve_digest(client: RegistryClient, repository: str, tag: str, digest: str) -> str:
    """The manifest digest to scan: ``digest`` if given (checked to exist), else the one
    ``tag`` names now. Raises :class:`ImageNotFound`."""
    reference = digest or tag
    found = client.manifest_digest(repository, reference)
    if found is None:
        raise ImageNotFound(client.url, repository, reference)
    return found


def plan_scan(client: RegistryClient, repository: str, tag: str, digest: str) -> ScanPlan:
    """Reads the manifest ``digest`` (and, for an index, its children) and lists what to
    scan. Children that are attestations (platform ``unknown/unknown``) or not images are
    left out. Raises :class:`NotAnImage` for an artifact that is not a container image
    (or an index without one) and the registry's errors (a missing child manifest
    raises :class:`~model.registry.RegistryNotFoundError`)."""
    if not is_digest(digest):
        raise ValueError(f"plan_scan needs a digest, not {digest!r}")
    manifest = client.get_manifest(repository, digest)
    if not manifest.is_index:
        image = _image(manifest, digest, "")
        return ScanPlan(repository, tag, digest, manifest.media_type, (image,))
    images = _children(client, repository, manifest, digest, 1)
    if not images:
        raise NotAnImage(digest, "the index lists no container image")
    return ScanPlan(repository, tag, digest, manifest.media_type, tuple(images), index=True)


def _children(
    client: RegistryClient, repository: str, index: Manifest, digest: str, depth: int
) -> list[ImagePlan]:
    images: list[ImagePlan] = []
    for child in index.children():
        if child.platform == _ATTESTATION_PLATFORM:
            continue
        if child.media_type not in (MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_MANIFEST) and not (
            child.media_type in INDEX_MEDIA_TYPES and depth < _MAX_INDEX_DEPTH
        ):
            continue
        manifest = client.get_manifest(repository, child.digest)
        if manifest.is_index:
            if depth < _MAX_INDEX_DEPTH:
                images.extend(_children(client, repository, manifest, child.digest, depth + 1))
            continue
        try:
            images.append(_image(manifest, child.digest, child.platform or ""))
        except NotAnImage:
            continue  # an artifact beside the images (a signature, an SBOM): not scanned
    return images


def _image(manifest: Manifest, digest: str, platform: str) -> ImagePlan:
    layers: list[Layer] = []
    foreign: list[Layer] = []
    for blob in manifest.blobs()[1:]:  # the config comes first
        layer = Layer(blob.digest, blob.size, blob.media_type)
        if blob.media_type and not blob.media_type.startswith(LAYER_MEDIA_PREFIXES):
            raise NotAnImage(digest, f"layer {blob.digest} has media type {blob.media_type!r}")
        if any(marker in blob.media_type for marker in _FOREIGN_MARKERS):
            foreign.append(layer)
        else:
            layers.append(layer)
    return ImagePlan(digest, manifest.media_type, platform, tuple(layers), tuple(foreign))


def chain_names(layer_digests: Sequence[str]) -> list[str]:
    """Harbor 1.4's Clair layer names for an image's layers, base first: layer *i* is
    named by the SHA-256 (hex) of ``"<digest 1>-<digest 2>-…-<digest i>-"``, so a layer
    name stands for the layer together with everything under it, and an image built on
    another reuses its names. The top layer's name is the image's ``details_key``."""
    names: list[str] = []
    chain = ""
    for digest in layer_digests:
        chain += digest + "-"
        names.append(hashlib.sha256(chain.encode()).hexdigest())
    return names
