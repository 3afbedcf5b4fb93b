"""The transfer workflow: copy a repository's tags from the source registry to a target.

One :class:`TransferRun` per run of a job (a retry starts a new one) holds the registry
clients, the tags left, the current tag's plan and what is known of the target's blobs.
Its methods are the states' work; each returns the next state. The ending states
release it (:meth:`TransferRun.release`); a job handed back by a service shutting down
is released by the service (:meth:`TransferRun.abandon`), so an upload session is never
left to the registry's purge.

Faults are survived inside a state first: every request that may be sent twice is
tried again with backoff (:func:`model.registry.retrying`), and a blob copy resumes
where the source's answer or the target's session broke off (:class:`BlobCopier`).
Only when those tries are spent does a state raise the retryable error; it carries
``progress=True`` when this run stored blobs or manifests that the next run skips, so
that such a retry does not count against the job's ``max_retries``. Waits between two
tries end at once on a stop request (:mod:`model.interrupt`), which the threads that
copy blobs see too: they run under the worker's interrupt.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable

from model.jobs import RepJob
from model.registry import (
    Descriptor,
    Manifest,
    RegistryAuthError,
    RegistryClient,
    RegistryNotFoundError,
)
from model.registry._retry import retrying
from model.replication._check import check_target
from model.replication._clients import job_params, source_client, target_client, target_label
from model.replication._copy import BlobCopy, faults_survived, step_outcome
from model.replication._counts import TransferCounts, marks_progress, seconds_since
from model.replication._errors import ReplicationError, RunReleased
from model.replication._plan import TagPlan, plan_tag
from model.replication._shared import ReplicationShared
from model.replication._states import PULL_MANIFEST, PUSH_MANIFEST, TRANSFER_BLOB
from model.replication._threads import RunThreads
from model.sm import CONTINUE
from model.status import Status

__all__ = [
    "BLOB_CONCURRENCY",
    "BLOB_STEP_BYTES",
    "HEAD_CONCURRENCY",
    "SHUTDOWN_CANCEL_TIMEOUT_S",
    "TAGS_AHEAD",
    "TransferRun",
]

#: Bytes each blob being copied moves per ``transfer_blob`` transition (one PATCH). A
#: step is streamed from the source a read chunk at a time, so its size costs no
#: memory, and a stop cuts a step short (its sockets are shut down). Each PATCH costs
#: distribution 2.8 a fixed price (it resumes the session and fsyncs several files),
#: and each is a chance to lose the whole session: once a PATCH is cut, or its answer
#: lost, distribution refuses every location it gave and the blob starts over. So
#: steps are large (the fault benchmark, ``scripts/bench/faults.py``, measures it).
BLOB_STEP_BYTES = 32 * 1024 * 1024
#: Blobs of one tag copied at the same time, each one step per transition. A target
#: takes one upload stream slower than the source gives it (it hashes, writes and
#: fsyncs), so parallel streams help; streamed steps make each one cost a connection
#: and a read chunk (``scripts/bench/replication.py`` measures the choice).
BLOB_CONCURRENCY = 3
#: Seconds a service shutting down gives a target to cancel one upload session.
SHUTDOWN_CANCEL_TIMEOUT_S = 5.0
#: Parallel ``HEAD`` requests when a tag's blobs are looked for on the target.
HEAD_CONCURRENCY = 8
#: Later tags planned at most while the current tag waits for a blob still being
#: copied, so that their blobs use the copy slots it leaves idle.
TAGS_AHEAD = 4


class TransferRun:
    """One run of a transfer job; see the module docstring. Called from the worker's
    thread only (but :meth:`abandon`): work it hands to its thread pool (``HEAD``
    requests, the steps of blobs copied at once) has ended before a state returns."""

    def __init__(self, job: RepJob, shared: ReplicationShared) -> None:
        self.job = job
        self.log = job.logger
        self.shared = shared
        self.repository = job_params(job).repository
        self.source: RegistryClient | None = None
        self.target: RegistryClient | None = None
        self.tags: deque[str] = deque()
        self.plan: TagPlan | None = None
        #: Later tags planned while the current one's blobs were all under way.
        self.ahead: deque[TagPlan] = deque()
        #: Blob digest → whether the target repository holds it (answers of HEAD, and
        #: what this run stored), kept for the whole run, across tags.
        self.blobs_present: dict[str, bool] = {}
        #: Manifest digests known to be in the target repository.
        self.manifests_present: set[str] = set()
        #: Blobs being copied (at most :data:`BLOB_CONCURRENCY`), and when each began.
        self.copies: list[BlobCopy] = []
        self.copy_started: dict[str, float] = {}
        #: Thread pools: one for HEAD requests, one for blob steps.
        self._threads = RunThreads(f"replication-{job.id}")
        self.counts = TransferCounts()
        #: Blobs and manifests this run stored on the target (what a retry skips).
        self.landed = 0
        self.started = time.monotonic()
        self.released = False
        self._lock = threading.Lock()  # released and _parked, against abandon()
        self._parked = False

    # -- states ------------------------------------------------------------------------

    def initialize(self) -> str:
        """Opens the clients and lists the tags (all of the source's when none named)."""
        self.shared.runs.add(self)
        params = job_params(self.job)
        self.source = source_client(self.job, self.shared.clients)
        self.target = target_client(self.job, self.shared.clients)
        if params.tags:
            tags = list(dict.fromkeys(params.tags))
        else:
            source = self.source
            try:
                tags = retrying(lambda: source.list_tags(self.repository))
            except RegistryNotFoundError:
                self.log.warning(
                    "repository {} is not in the source registry {}: nothing to transfer",
                    self.repository,
                    self.source.url,
                )
                tags = []
        self.tags = deque(tags)
        self.log.info(
            "transfer {} from {} to {}: {} tag(s): {}",
            self.repository,
            self.source.url,
            target_label(self.job),
            len(tags),
            ", ".join(tags) or "-",
        )
        return CONTINUE

    def check(self) -> str:
        """Checks that the target answers ``/v2/`` and that the credentials may push to
        the repository; raises :class:`TargetCheckError` saying which and why."""
        target = self._target()
        label = target_label(self.job)
        who = check_target(target, self.repository, label)
        self.log.info("target {} answers and lets {} push to {}", label, who, self.repository)
        return CONTINUE

    @marks_progress
    def pull_manifest(self) -> str:
        """Takes the next tag: one planned ahead already (see :meth:`transfer_blob`), or
        the next one read from the source, its manifest (and an index's children) and
        which blobs the target lacks. A tag gone from the source, or already on the
        target with the same digest, is skipped."""
        if self.ahead:
            self.plan = self.ahead.popleft()
            return TRANSFER_BLOB
        if not self.tags:
            return Status.FINISHED.value
        plan = self._plan_tag(self.tags.popleft())
        if plan is None:
            return PULL_MANIFEST
        self.plan = plan
        return TRANSFER_BLOB

    @marks_progress
    def transfer_blob(self) -> str:
        """Advances the current tag's blobs by one bounded step: blobs the target holds
        are skipped, blobs it holds in another repository are mounted, and up to
        :data:`BLOB_CONCURRENCY` missing ones move at most :data:`BLOB_STEP_BYTES`
        each, in parallel; the step ends when all of them have moved. Slots the tag's
        own blobs leave free take the blobs of the next tags
        (:meth:`_next_blob_ahead`). The tag's manifest is pushed once its own blobs
        are on the target, whatever is still under way for later tags."""
        plan = self._plan()
        while len(self.copies) < BLOB_CONCURRENCY:
            blob = self._next_blob_to_send(plan) or self._next_blob_ahead()
            if blob is None:
                break
            self.copies.append(
                BlobCopy(
                    self._source(),
                    self.repository,
                    self._target(),
                    self.repository,
                    blob,
                    step_bytes=BLOB_STEP_BYTES,
                )
            )
            self.copy_started[blob.digest] = time.monotonic()
            self.log.debug("blob {} ({} bytes): sending", blob.digest, blob.size)
        if not self.copies or self._ready(plan):
            return PUSH_MANIFEST
        self._step_copies()
        return PUSH_MANIFEST if self._ready(plan) else TRANSFER_BLOB

    @marks_progress
    def push_manifest(self) -> str:
        """Stores the tag's missing child manifests, then its own under the tag, once
        every blob they name is known to be on the target (found there by ``HEAD``, or
        committed under its digest, which the target checked)."""
        plan = self._plan()
        target = self._target()
        missing = sorted(d for d in plan.digests if not self.blobs_present.get(d))
        if missing:
            raise ReplicationError(
                f"{self.repository}:{plan.tag}: blob(s) {', '.join(missing)} are not known "
                "to be on the target; the manifest is not pushed"
            )
        for child in plan.children:
            self._push(target, child, child.digest, f"{self.repository}@{child.digest}")
        self._push(target, plan.manifest, plan.tag, f"{self.repository}:{plan.tag}")
        self.counts.tags_pushed += 1
        self.plan = None
        return PULL_MANIFEST

    def release(self, state: str) -> None:
        """Ends the run as it enters ``state``: cancels unfinished uploads, stops its
        threads, gives the clients back to the service's pool and logs what the run
        did. Safe to call more than once."""
        with self._lock:
            if self.released:
                return
            self.released = True
        self._release(state)

    # -- the worker letting go ----------------------------------------------------------

    def resume(self) -> None:
        """The machine enters one of the run's states (worker thread). Raises the
        retryable :class:`RunReleased` when a service shutting down released the run."""
        with self._lock:
            if self.released:
                raise RunReleased(
                    f"replication job {self.job.id}: the run was released by a service "
                    "shutting down"
                )
            self._parked = False

    def park(self) -> None:
        """The machine leaves one of the run's states (worker thread)."""
        with self._lock:
            self._parked = True

    def abandon(self) -> bool:
        """For a service shutting down, from any thread: when the worker let go of the
        run outside a transition (it handed the job back as pending), releases it as
        ``pending``: upload sessions are cancelled, each given
        :data:`SHUTDOWN_CANCEL_TIMEOUT_S`. A run inside a transition is left to its
        worker. Returns whether the run was released."""
        with self._lock:
            if not self._parked or self.released:
                return False
            self.released = True
        self._release(Status.PENDING.value, cancel_timeout_s=SHUTDOWN_CANCEL_TIMEOUT_S)
        return True

    def _release(self, state: str, cancel_timeout_s: float | None = None) -> None:
        self.shared.runs.discard(self)
        copies, self.copies = self.copies, []
        for copy in copies:
            copy.cancel(timeout_s=cancel_timeout_s)
            self.log.warning(
                "blob {} ({} bytes): upload cancelled after {} bytes ({:.3f} s), job {}",
                copy.blob.digest,
                copy.blob.size,
                copy.copied,
                seconds_since(self.copy_started.get(copy.blob.digest, self.started)),
                state,
            )
        self._threads.shutdown()
        for client in (self.source, self.target):
            if client is not None:
                self.shared.clients.release(client)
        self.counts.log_end(self.log, state, seconds_since(self.started))

    # -- helpers -----------------------------------------------------------------------

    def _source(self) -> RegistryClient:
        if self.source is None:
            raise ReplicationError("the source client is not open (initialize did not run)")
        return self.source

    def _target(self) -> RegistryClient:
        if self.target is None:
            raise ReplicationError("the target client is not open (initialize did not run)")
        return self.target

    def _plan(self) -> TagPlan:
        if self.plan is None:
            raise ReplicationError("no tag is being transferred (pull_manifest did not run)")
        return self.plan

    def _plan_tag(self, tag: str) -> TagPlan | None:
        """Reads ``tag``'s manifest from the source and plans it (see
        :meth:`pull_manifest`); ``None`` when the tag is skipped."""
        source, target = self._source(), self._target()
        started = time.monotonic()
        try:
            manifest = retrying(lambda: source.get_manifest(self.repository, tag))
        except RegistryNotFoundError:
            self._tag_skipped(tag, "it is no longer in the source registry")
            return None
        on_target = retrying(lambda: target.manifest_digest(self.repository, tag))
        if on_target == manifest.digest:
            self.manifests_present.add(manifest.digest)
            self._tag_skipped(tag, f"the target has it already, as {manifest.digest}", "info")
            return None
        try:
            plan = plan_tag(tag, manifest, source, target, self.repository, self.manifests_present)
        except RegistryNotFoundError as exc:
            self._tag_skipped(tag, f"part of it is no longer in the source registry ({exc})")
            return None
        self._look_up_blobs(plan.blobs)
        missing = sum(1 for b in plan.blobs if not self.blobs_present.get(b.digest))
        self.log.info(
            "tag {}:{} is manifest {} ({}, {} bytes{}){}: {} blob(s), {} not on the target "
            "({:.3f} s)",
            self.repository,
            tag,
            manifest.digest,
            manifest.media_type,
            len(manifest.content),
            f", {len(manifest.children())} platform(s)" if manifest.is_index else "",
            f", replacing {on_target}" if on_target else "",
            len(plan.blobs),
            missing,
            seconds_since(started),
        )
        return plan

    def _next_blob_ahead(self) -> Descriptor | None:
        """A blob of a later tag to send while a copy slot would idle: the current tag's
        own blobs are all under way (its small ones done, a large one still going), so
        the next tags are planned (at most :data:`TAGS_AHEAD` held) and their blobs
        start. Their manifests are still pushed in tag order, each once its blobs are
        on the target."""
        for planned in self.ahead:
            blob = self._next_blob_to_send(planned)
            if blob is not None:
                return blob
        for _ in range(TAGS_AHEAD - len(self.ahead)):
            if not self.tags:
                break
            plan = self._plan_tag(self.tags.popleft())
            if plan is None:
                continue
            self.ahead.append(plan)
            blob = self._next_blob_to_send(plan)
            if blob is not None:
                return blob
        return None

    def _ready(self, plan: TagPlan) -> bool:
        """Whether every blob of ``plan`` is known to be on the target."""
        return not plan.blobs and all(self.blobs_present.get(d) for d in plan.digests)

    def _tag_skipped(self, tag: str, why: str, level: str = "warning") -> None:
        self.counts.tags_skipped += 1
        self.shared.stats.add("tags_skipped")
        self.log.log(level.upper(), "tag {}:{} skipped: {}", self.repository, tag, why)

    def _look_up_blobs(self, blobs: Iterable[Descriptor]) -> None:
        """Asks the target (``HEAD``, in parallel) about blobs this run knows nothing of."""
        unknown = [b.digest for b in blobs if b.digest not in self.blobs_present]
        if not unknown:
            return
        target = self._target()

        def exists(digest: str) -> bool:
            return retrying(lambda: target.blob_exists(self.repository, digest))

        answers = self._threads.map(exists, unknown, HEAD_CONCURRENCY)
        for digest, present in zip(unknown, answers, strict=True):
            self.blobs_present[digest] = present
            if present:
                self.shared.locations.remember(target.url, digest, self.repository)

    def _next_blob_to_send(self, plan: TagPlan) -> Descriptor | None:
        """Pops the plan's blobs the target holds (logged as skipped) or can mount
        (logged as mounted); returns the first that must be sent, if any."""
        target = self._target()
        while plan.blobs:
            blob = plan.blobs[0]
            if blob.digest in self.copy_started:
                plan.blobs.popleft()  # under way for another tag; the push waits for it
                continue
            started = time.monotonic()
            if blob.digest not in self.blobs_present:
                self._look_up_blobs([blob])
            if self.blobs_present[blob.digest]:
                self.log.info(
                    "blob {} ({} bytes) skipped: already on the target ({:.3f} s)",
                    blob.digest,
                    blob.size,
                    seconds_since(started),
                )
                self.counts.blobs_skipped += 1
                self.shared.stats.add("blobs_skipped")
                plan.blobs.popleft()
                continue
            origin = self.shared.locations.where(target.url, blob.digest, besides=self.repository)
            if origin is not None and self._mount(target, blob, origin):
                self.log.info(
                    "blob {} ({} bytes) mounted from {} ({:.3f} s)",
                    blob.digest,
                    blob.size,
                    origin,
                    seconds_since(started),
                )
                self.counts.blobs_mounted += 1
                self.shared.stats.add("blobs_mounted")
                self._blob_stored(blob.digest)
                plan.blobs.popleft()
                continue
            plan.blobs.popleft()
            return blob
        return None

    def _step_copies(self) -> None:
        """Moves every blob being copied by one step, in parallel; logs and records the
        ones that completed. Raises the first failure once every step has ended (a
        failed copy has cancelled itself; the others are cancelled by :meth:`release`)."""
        copies = list(self.copies)
        before = [c.sent for c in copies]
        outcomes = self._threads.map(step_outcome, copies, BLOB_CONCURRENCY)
        failure: Exception | None = None
        for copy, sent, outcome in zip(copies, before, outcomes, strict=True):
            self._count_bytes(copy.sent - sent)
            if isinstance(outcome, Exception):
                failure = failure or outcome
                continue
            if not outcome:
                if copy.sent > sent:
                    self.log.info(
                        "blob {}: {} of {} bytes sent", copy.blob.digest, copy.sent, copy.blob.size
                    )
                continue
            self.copies.remove(copy)
            blob = copy.blob
            self.log.info(
                "blob {} ({} bytes) sent ({:.3f} s){}",
                blob.digest,
                blob.size,
                seconds_since(self.copy_started.pop(blob.digest, self.started)),
                faults_survived(copy),
            )
            self.counts.blobs_sent += 1
            self.shared.stats.add("blobs_sent")
            self._blob_stored(blob.digest)
        if failure is not None:
            raise failure

    def _mount(self, target: RegistryClient, blob: Descriptor, origin: str) -> bool:
        try:
            if retrying(lambda: target.mount_blob(self.repository, blob.digest, origin)):
                return True
        except (RegistryAuthError, RegistryNotFoundError) as exc:
            self.log.debug("blob {}: no mount from {}: {}", blob.digest, origin, exc)
        self.shared.locations.forget(target.url, blob.digest, origin)
        return False

    def _blob_stored(self, digest: str) -> None:
        self.landed += 1
        self.blobs_present[digest] = True
        self.shared.locations.remember(self._target().url, digest, self.repository)

    def _count_bytes(self, sent: int) -> None:
        if sent:
            self.counts.bytes_sent += sent
            self.shared.stats.add("bytes_sent", sent)

    def _push(self, target: RegistryClient, manifest: Manifest, reference: str, name: str) -> None:
        started = time.monotonic()
        retrying(lambda: target.put_manifest(self.repository, reference, manifest))
        self.landed += 1
        self.manifests_present.add(manifest.digest)
        self.counts.manifests_pushed += 1
        self.shared.stats.add("manifests_pushed")
        self.log.info(
            "manifest {} ({}, {} bytes) pushed as {} ({:.3f} s)",
            manifest.digest,
            manifest.media_type,
            len(manifest.content),
            name,
            seconds_since(started),
        )
