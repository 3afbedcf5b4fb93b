"""The job kind ``scripts/bench/nodes.py`` loads into each ``jobservice worker`` node
(``kind_modules = ["nodes_kinds:kinds"]``, this folder on ``PYTHONPATH``).

``nodebench``: ``pending → running → work → finished``, as the peer benchmarks' kind
(:mod:`peer_ours`). ``work`` waits ``params["ms"]`` milliseconds (0, the default: a
no-op) and then appends the job's id to the node process's own journal file
(:mod:`journal`, its folder in ``BENCH_JOURNAL_DIR``): one ``os.write``, no database
write, and the line survives a SIGKILL of the node. So the benchmark reads which
process ran each job's body, and how many times, without adding a transaction per
job to what it measures.
"""

from __future__ import annotations

import time

import journal

from model.jobs import KindJob
from model.kinds import JobKind
from model.settings import Settings
from model.sm import CONTINUE, SM, Job, StatusUpdater
from model.status import Status

__all__ = ["KIND", "WORKERS", "kinds"]

#: The kind's name.
KIND = "nodebench"
#: Workers of the kind's pool in every node.
WORKERS = 8


class _Work:
    """The job's body: the wait, then the journal line."""

    def __init__(self, job: KindJob) -> None:
        self.job = job

    def enter(self) -> str:
        ms = float(self.job.params.get("ms", 0))
        if ms:
            time.sleep(ms / 1000)
        journal.record(self.job.id)
        return CONTINUE

    def exit(self) -> None:
        return None


def _transitions(sm: SM, job: Job) -> None:
    assert isinstance(job, KindJob)
    sm.add_transition(Status.RUNNING, "work", _Work(job))
    sm.add_transition("work", Status.FINISHED, StatusUpdater(job, Status.FINISHED))


def kinds(_settings: Settings) -> list[JobKind]:
    """The kinds of a node of the benchmark."""
    return [JobKind(KIND, _transitions, WORKERS)]
