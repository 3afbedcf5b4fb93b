"""The replication workflow: transfer a repository's tags to a target, or delete them.

Transfer, as the original: ``running → initialize → check → pull_manifest →
transfer_blob → push_manifest → pull_manifest`` (next tag) ``… → finished``, where
``pull_manifest`` loops on itself past a skipped tag and ``transfer_blob`` on itself
once per bounded step.

- ``check``: the target answers ``GET /v2/`` and lets the credentials push to the
  repository (an upload session opened and cancelled), or the job ends in ``error``
  with a message naming the target and its answer.
- ``pull_manifest``: the next tag's manifest as raw bytes (an index's or list's
  children too, every platform); a tag already on the target with the same digest,
  or gone from the source, is skipped with a log line.
- ``transfer_blob``: blobs the target holds are skipped (``HEAD``, answers kept for
  the whole run, across tags), blobs known in another repository of the target are
  mounted, others are copied :data:`BLOB_STEP_BYTES` per transition (three at once,
  each step streamed from the source's ``GET`` into one ``PATCH``), so a stop request
  takes effect between two steps of a large blob.
- ``push_manifest``: child manifests first, then the tag: a tag never points at
  missing content.

Delete: ``running → delete → finished`` (see :class:`DeleteRun`).

A network failure, 5xx or 429 raises a retryable error: the job enters ``retrying``,
and its next run starts over cheaply (tags and blobs on the target are skipped). The
states that end a run (finished, stopped, error, canceled, retrying) cancel an
unfinished upload session, close the connections and log a summary; so does a service
shutting down for a job its worker handed back as pending. Every state, blob (digest,
size, skipped/mounted/sent, seconds) and manifest goes to the job's log.

A service's jobs share registry clients (connections and tokens), blob locations for
mounts, and counters for metrics (bytes sent, blobs sent/mounted/skipped, manifests…),
held in the service's context: :func:`open_shared` ``(ctx)`` attaches them (the
replication kind's ``open`` hook), :func:`replication_stats` ``(ctx).snapshot()`` reads
the counters, :func:`close_shared` ``(ctx)`` (its ``close`` hook) releases the runs
handed back and closes the clients when the service stops.
"""

from __future__ import annotations

from model.errors import JobServiceError
from model.jobs import RepJob
from model.operation import Operation
from model.replication._clients import job_params
from model.replication._delete import DeleteRun
from model.replication._errors import ReplicationError, RunReleased, TargetCheckError
from model.replication._shared import (
    STAT_NAMES,
    BlobLocations,
    ReplicationStats,
    close_shared,
    open_shared,
    replication_stats,
)
from model.replication._states import (
    CHECK,
    DELETE,
    INITIALIZE,
    PULL_MANIFEST,
    PUSH_MANIFEST,
    TRANSFER_BLOB,
    Ending,
    Work,
    release_on_endings,
)
from model.replication._submit import RepositoryLister, replication_rows, source_registry
from model.replication._transfer import BLOB_STEP_BYTES, TransferRun
from model.sm import SM, Job, StatusUpdater
from model.status import Status

__all__ = [
    "BLOB_STEP_BYTES",
    "CHECK",
    "DELETE",
    "INITIALIZE",
    "PULL_MANIFEST",
    "PUSH_MANIFEST",
    "STAT_NAMES",
    "TRANSFER_BLOB",
    "BlobLocations",
    "DeleteRun",
    "Operation",
    "ReplicationError",
    "ReplicationStats",
    "RepositoryLister",
    "RunReleased",
    "TargetCheckError",
    "TransferRun",
    "add_transitions",
    "close_shared",
    "open_shared",
    "replication_rows",
    "replication_stats",
    "source_registry",
]


def add_transitions(sm: SM, job: Job) -> None:
    """Adds the states of ``job``'s operation (``transfer`` or ``delete``) from
    ``running`` on. Raises :class:`ReplicationError` for another operation."""
    if not isinstance(job, RepJob):
        raise JobServiceError(f"replication needs a RepJob, got {job!r}")
    operation = job_params(job).operation
    shared = open_shared(job.ctx)
    if operation == Operation.TRANSFER:
        run = TransferRun(job, shared)
        pull = Work(run.pull_manifest, run)
        blob = Work(run.transfer_blob, run)
        sm.add_transition(Status.RUNNING, INITIALIZE, Work(run.initialize, run))
        sm.add_transition(INITIALIZE, CHECK, Work(run.check, run))
        sm.add_transition(CHECK, PULL_MANIFEST, pull)
        sm.add_transition(PULL_MANIFEST, PULL_MANIFEST, pull)
        sm.add_transition(PULL_MANIFEST, TRANSFER_BLOB, blob)
        sm.add_transition(TRANSFER_BLOB, TRANSFER_BLOB, blob)
        sm.add_transition(TRANSFER_BLOB, PUSH_MANIFEST, Work(run.push_manifest, run))
        sm.add_transition(PUSH_MANIFEST, PULL_MANIFEST, pull)
        finished = Ending(StatusUpdater(job, Status.FINISHED), Status.FINISHED, run.release)
        sm.add_transition(PULL_MANIFEST, Status.FINISHED, finished)
        release_on_endings(sm, run.release)
    elif operation == Operation.DELETE:
        deletion = DeleteRun(job, shared)
        sm.add_transition(Status.RUNNING, DELETE, Work(deletion.delete))
        finished = Ending(StatusUpdater(job, Status.FINISHED), Status.FINISHED, deletion.release)
        sm.add_transition(DELETE, Status.FINISHED, finished)
        release_on_endings(sm, deletion.release)
    else:
        raise ReplicationError(
            f"replication job {job.id}: unknown operation {operation!r} "
            f"(expected {' or '.join(Operation)})"
        )
