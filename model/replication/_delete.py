"""The delete workflow: remove a repository's tags, or manifests named by digest, from
the target."""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from model.jobs import RepJob
from model.registry import RegistryClient, RegistryNotFoundError, is_digest
from model.replication._clients import job_params, target_client, target_label
from model.replication._shared import ReplicationShared
from model.status import Status

__all__ = ["DeleteRun"]

#: Parallel ``HEAD`` requests when the digests of the target's tags are read.
HEAD_CONCURRENCY = 8


class DeleteRun:
    """One run of a delete job.

    A registry deletes a manifest by digest, and with it every tag pointing at it. So
    each tag's digest is read on the target (``HEAD`` with every manifest type
    accepted) and deleted only when no tag the job does not name points at it too;
    otherwise the tag is kept and the log says why. A tag or repository missing on
    the target is a warning. No tags named: every tag of the repository goes.

    A name that is a digest (``sha256:…``, a manifest the source deleted by digest)
    deletes that manifest, whatever tags point at it: the source lost them with it,
    and replication copies manifests byte for byte, so the digest is the same here.
    """

    def __init__(self, job: RepJob, shared: ReplicationShared) -> None:
        self.job = job
        self.log = job.logger
        self.shared = shared
        self.repository = job_params(job).repository
        self.target: RegistryClient | None = None
        self.deleted = 0
        self.kept = 0
        self.started = time.monotonic()
        self.released = False

    def delete(self) -> str:
        """The ``delete`` state's work; returns ``finished``."""
        params = job_params(self.job)
        target = self.target = target_client(self.job, self.shared.clients)
        label = target_label(self.job)
        named = list(dict.fromkeys(params.tags))
        by_digest = [name for name in named if is_digest(name)]
        for digest in by_digest:
            self._delete_by_digest(target, digest, label)
        named = [name for name in named if not is_digest(name)]
        if by_digest and not named:
            return Status.FINISHED.value
        try:
            all_tags = target.list_tags(self.repository)
        except RegistryNotFoundError:
            self.log.warning(
                "repository {} is not on the target {}: nothing to delete", self.repository, label
            )
            return Status.FINISHED.value
        wanted = named or all_tags
        self.log.info(
            "delete {} tag(s) of {} on {}: {}",
            len(wanted),
            self.repository,
            label,
            ", ".join(wanted) or "-",
        )
        digests = self._digests(target, dict.fromkeys([*all_tags, *wanted]))
        chosen = set(wanted)
        for digest, tags in self._by_digest(wanted, digests).items():
            sharing = sorted(t for t in all_tags if digests.get(t) == digest and t not in chosen)
            if sharing:
                self.kept += 1
                self.log.warning(
                    "tag(s) {} of {} not deleted: manifest {} is also tagged {}, which this job "
                    "does not name, and deleting the digest would remove those tags too",
                    ", ".join(tags),
                    self.repository,
                    digest,
                    ", ".join(sharing),
                )
            else:
                self._delete_manifest(target, digest, tags)
        return Status.FINISHED.value

    def _by_digest(self, wanted: list[str], digests: dict[str, str]) -> dict[str, list[str]]:
        """The tags of ``wanted`` on the target, by the digest of their manifest (a tag
        missing on the target is logged and left out)."""
        by_digest: dict[str, list[str]] = {}
        for tag in wanted:
            digest = digests.get(tag)
            if digest is None:
                self.log.warning(
                    "tag {}:{} is not on the target: nothing to delete", self.repository, tag
                )
            else:
                by_digest.setdefault(digest, []).append(tag)
        return by_digest

    def _delete_by_digest(self, target: RegistryClient, digest: str, label: str) -> None:
        """Deletes the manifest ``digest`` (with every tag pointing at it) and logs it."""
        started = time.monotonic()
        if target.delete_manifest(self.repository, digest):
            self.deleted += 1
            self.shared.stats.add("manifests_deleted")
            self.log.info(
                "manifest {}@{} deleted by digest, with any tag pointing at it ({:.3f} s)",
                self.repository,
                digest,
                time.monotonic() - started,
            )
        else:
            self.log.warning(
                "manifest {}@{} is not on the target {}: nothing to delete",
                self.repository,
                digest,
                label,
            )

    def _delete_manifest(self, target: RegistryClient, digest: str, tags: list[str]) -> None:
        """Deletes the manifest ``digest`` (and with it ``tags``) and logs it."""
        started = time.monotonic()
        if target.delete_manifest(self.repository, digest):
            self.deleted += 1
            self.shared.stats.add("manifests_deleted")
            self.log.info(
                "manifest {} deleted with tag(s) {} ({:.3f} s)",
                digest,
                ", ".join(tags),
                time.monotonic() - started,
            )
        else:
            self.log.warning(
                "manifest {} of tag(s) {} was already gone from the target",
                digest,
                ", ".join(tags),
            )

    def release(self, state: str) -> None:
        """Closes the client and logs what the run did (safe to call more than once)."""
        if self.released:
            return
        self.released = True
        if self.target is not None:
            self.shared.clients.release(self.target)
        self.log.info(
            "delete {}: {} manifest(s) deleted, {} kept ({:.3f} s)",
            state,
            self.deleted,
            self.kept,
            time.monotonic() - self.started,
        )

    def _digests(self, target: RegistryClient, tags: Iterable[str]) -> dict[str, str]:
        """The manifest digest of each tag present on the target (absent ones left out)."""
        names = list(tags)

        def digest(tag: str) -> str | None:
            return target.manifest_digest(self.repository, tag)

        if len(names) <= 1:
            answers = [digest(t) for t in names]
        else:
            with ThreadPoolExecutor(
                min(HEAD_CONCURRENCY, len(names)), thread_name_prefix="replication-head"
            ) as pool:
                answers = list(pool.map(digest, names))
        return {t: d for t, d in zip(names, answers, strict=True) if d is not None}
