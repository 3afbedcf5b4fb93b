"""One blob of a manifest copied from the source registry to the target in bounded
steps, each streamed from the source's ``GET`` straight into one ``PATCH`` of the
target's upload session: no thread and no buffer of a step's size."""

from __future__ import annotations

from model.registry import BlobCopier, Descriptor, RegistryClient

__all__ = ["BlobCopy", "faults_survived", "step_outcome"]


class BlobCopy(BlobCopier):
    """Copies ``blob`` (a manifest's descriptor: digest and size) from
    ``source_repository`` of ``source`` to ``target_repository`` of ``target``, at most
    ``step_bytes`` per :meth:`step` (one ``PATCH``). Memory is a few read chunks of
    the source whatever ``step_bytes`` is; the digest and size of what was streamed are
    checked before the blob is committed.

    An error in a step cancels the copy (source stream closed, upload session deleted)
    before it propagates; :meth:`cancel` does the same on request and is idempotent.
    A step and :meth:`cancel` must not run at the same time.
    """

    def __init__(
        self,
        source: RegistryClient,
        source_repository: str,
        target: RegistryClient,
        target_repository: str,
        blob: Descriptor,
        *,
        step_bytes: int,
    ) -> None:
        if step_bytes <= 0:
            raise ValueError("step_bytes must be positive")
        super().__init__(
            source, source_repository, target, target_repository, blob.digest, size=blob.size
        )
        self.blob = blob
        self.step_bytes = step_bytes

    def step(self, max_bytes: int | None = None) -> bool:
        """Moves at most ``max_bytes`` (``step_bytes`` by default); returns whether the
        blob is committed. Raises as :meth:`BlobCopier.step`."""
        return super().step(self.step_bytes if max_bytes is None else max_bytes)


def faults_survived(copy: BlobCopy) -> str:
    """What a copy went through, for its log line (empty when nothing failed)."""
    parts = []
    if copy.source_reopens:
        parts.append(f"source asked again {copy.source_reopens} time(s)")
    if copy.resumes:
        parts.append(f"upload resumed {copy.resumes} time(s)")
    if copy.restarts:
        parts.append(f"upload started over {copy.restarts} time(s)")
    if copy.sent != copy.copied:
        parts.append(f"{copy.sent} bytes sent in all")
    return f" after faults: {', '.join(parts)}" if parts else ""


def step_outcome(copy: BlobCopy) -> bool | Exception:
    """One step of ``copy``: whether it completed, or what it raised."""
    try:
        return copy.step()
    except Exception as exc:
        return exc
