"""What one tag of a transfer needs on the target."""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass, field

from model.registry import Descriptor, Manifest, RegistryClient
from model.registry._retry import retrying
from model.replication._errors import ReplicationError

__all__ = ["MAX_INDEX_DEPTH", "TagPlan", "plan_tag"]

#: Deepest nesting of indexes followed (an index of indexes is 2).
MAX_INDEX_DEPTH = 4

#: Media type fragments of layers that live outside registries ("foreign",
#: "non-distributable"): manifests may name them, registries never hold them.
_EXTERNAL_LAYER_MARKS = ("foreign", "nondistributable")


def _external(blob: Descriptor) -> bool:
    return any(mark in blob.media_type for mark in _EXTERNAL_LAYER_MARKS)


@dataclass
class TagPlan:
    """What one tag needs on the target: its manifest, the child manifests missing
    there (pushed first, innermost first) and the blobs still to check or copy."""

    tag: str
    manifest: Manifest
    children: list[Manifest] = field(default_factory=list)
    blobs: deque[Descriptor] = field(default_factory=deque)
    _digests: set[str] = field(default_factory=set)

    def add_blob(self, blob: Descriptor) -> None:
        if blob.digest not in self._digests and not _external(blob):
            self._digests.add(blob.digest)
            self.blobs.append(blob)

    @property
    def digests(self) -> frozenset[str]:
        """Every blob the tag needs (those already on the target included)."""
        return frozenset(self._digests)


def plan_tag(
    tag: str,
    manifest: Manifest,
    source: RegistryClient,
    target: RegistryClient,
    repository: str,
    manifests_present: set[str],
) -> TagPlan:
    """The plan of ``tag``, whose manifest is ``manifest``: for an index, its children
    missing in ``repository`` of ``target`` (read from ``source``; those found there are
    added to ``manifests_present``); the blobs they name, largest first. Raises
    :class:`~model.registry.RegistryNotFoundError` when part of it is gone from the
    source, :class:`ReplicationError` for indexes nested deeper than
    :data:`MAX_INDEX_DEPTH`."""
    plan = TagPlan(tag, manifest)
    _collect(plan, manifest, 0, source, target, repository, manifests_present)
    # Largest first: with several copies at once, the longest starts earliest.
    plan.blobs = deque(sorted(plan.blobs, key=lambda b: b.size, reverse=True))
    return plan


def _collect(
    plan: TagPlan,
    manifest: Manifest,
    depth: int,
    source: RegistryClient,
    target: RegistryClient,
    repository: str,
    manifests_present: set[str],
) -> None:
    """Adds ``manifest``'s blobs, or for an index its children missing on the target
    (each after its own children) and their blobs, to ``plan``."""
    for child in manifest.children():
        digest = child.digest
        if digest in manifests_present:
            continue
        if retrying(functools.partial(target.manifest_digest, repository, digest)):
            manifests_present.add(digest)
            continue
        if depth >= MAX_INDEX_DEPTH:
            raise ReplicationError(
                f"{repository}:{plan.tag} nests indexes deeper than {MAX_INDEX_DEPTH}"
            )
        child_manifest = retrying(functools.partial(source.get_manifest, repository, digest))
        _collect(plan, child_manifest, depth + 1, source, target, repository, manifests_present)
        plan.children.append(child_manifest)
    for blob in manifest.blobs():
        plan.add_blob(blob)
