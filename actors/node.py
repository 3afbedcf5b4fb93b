"""This service as one node of the job service: its row in the ``node`` table, its
beats, and the take-over of dead nodes' jobs (see :mod:`model.db.nodes`).

A node is dead when its beat is older than ``node_timeout``, or at once when it ran on
this machine and its process is gone (a restart after a crash resumes its jobs without
waiting for the timeout). Nodes of this process (several embedded services on one
database) are never taken for dead.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from loguru import logger

from model.db.nodes import TakenOver
from model.jobs import JobContext
from model.kinds import KindRegistry

__all__ = ["Membership"]

#: Ids of the nodes of this process that have not left.
_LOCAL: set[int] = set()
_LOCAL_LOCK = threading.Lock()


def _version() -> str:
    try:
        return version("jobservice")
    except PackageNotFoundError:
        return "0+unknown"


class Membership:
    """This service's node. Its methods run in the dispatcher's thread, but
    :meth:`join` and :meth:`leave`, which the service calls at start and shutdown, and
    :meth:`wake_others`, which pools call."""

    def __init__(self, ctx: JobContext, kinds: KindRegistry) -> None:
        self.ctx = ctx
        self.kinds = kinds
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.name = ctx.settings.node_name or f"{self.host}:{self.pid}"
        self.id: int | None = None
        self.others = 0
        #: When this node's last beat landed (monotonic), None before the first.
        self._beat_at: float | None = None

    @property
    def nodes(self) -> Any:
        return self.ctx.store.nodes

    # -- life --------------------------------------------------------------------------

    def join(self) -> list[TakenOver]:
        """Registers this node, then takes over the jobs of dead nodes (never a live
        node's). Returns what it took."""
        self._register()
        taken = self.take_over()
        self._beat_at = time.monotonic()
        self.others = self.nodes.others_live(self.id, self.ctx.settings.node_timeout)
        self.ctx.store.notify_others = self.others > 0
        # Work of these kinds queued here goes to this node's pools first.
        self.ctx.store.local_kinds = frozenset(kind.name for kind in self.kinds)
        return taken

    def _register(self) -> None:
        node = self.nodes.register(self.name, self.host, self.pid, _version())
        with _LOCAL_LOCK:
            _LOCAL.add(node)
        self.id = self.ctx.store.node = node
        logger.info("node {} (#{}) joined", self.name, node)

    def beat(self, pools: Mapping[str, Any]) -> list[TakenOver]:
        """Records a beat; takes over the jobs of nodes found dead. A node that finds
        itself taken for dead (its beats did not land for ``node_timeout``) joins again
        under a new id: the jobs it still runs were handed back, and its writes to them
        are refused (their rows name another node)."""
        assert self.id is not None
        before, self._beat_at = self._beat_at, None
        if not self.nodes.beat(self.id, pools):
            logger.error(
                "node {} (#{}) was taken for dead by another node (no heartbeat for {} s): "
                "its running jobs were handed back; joining again",
                self.name,
                self.id,
                self.ctx.settings.node_timeout,
            )
            self._forget(self.id)
            self._register()
        now = self._beat_at = time.monotonic()
        settings = self.ctx.settings
        taken: list[TakenOver] = []
        if before is not None and now - before <= 2 * settings.heartbeat_interval:
            taken = self.take_over()
        else:
            # This node's beats did not land for a while (the database was away): the
            # others' did not either. Their next beats come first; a node whose beat
            # is still old then is taken over at the next round.
            logger.info(
                "node {}: beating again; taking over dead nodes from the next beat", self.name
            )
        self.others = self.nodes.others_live(self.id, settings.node_timeout)
        self.ctx.store.notify_others = self.others > 0
        return taken

    def leave(self, kinds: Iterable[str]) -> None:
        """Marks this node stopped and tells the other nodes that jobs of ``kinds`` were
        handed back."""
        if self.id is None:
            return
        node, self.id = self.id, None
        try:
            self.nodes.end(node)
            self.nodes.notify(f"wake {kind} {node}" for kind in kinds)
        except Exception as exc:
            logger.warning("node {} (#{}): cannot record its stop: {}", self.name, node, exc)
        finally:
            self._forget(node)
            self.ctx.store.node = None
            self.ctx.store.local_kinds = frozenset()
        logger.info("node {} (#{}) left", self.name, node)

    def wake_others(self, kind: str) -> None:
        """Tells the other nodes, best effort, that work of ``kind`` may wait (from any
        thread: a pool that cannot take what it was woken for)."""
        if not self.ctx.store.notify_others:
            return
        try:
            self.nodes.notify([f"wake {kind} {self.id}"])
        except Exception as exc:
            logger.warning("node {}: cannot wake the other nodes for {}: {}", self.name, kind, exc)

    @staticmethod
    def _forget(node: int) -> None:
        with _LOCAL_LOCK:
            _LOCAL.discard(node)

    # -- the others ----------------------------------------------------------------------

    def take_over(self) -> list[TakenOver]:
        """Marks dead nodes gone and hands their running jobs back as ``pending``; each
        job's log says which node died and which took its job over."""
        assert self.id is not None
        settings = self.ctx.settings
        taken = self.nodes.take_over(self.id, self.name, settings.node_timeout, self._dead_here())
        by_node: dict[str | None, int] = {}
        for job in taken:
            by_node[job.dead_node] = by_node.get(job.dead_node, 0) + 1
            kind = self.kinds.of_row(job.table, job.kind)
            if kind is not None:
                kind.make_job(self.ctx, job.job_id).logger.warning(
                    "node {} is gone: job handed back as pending by node {}",
                    job.dead_node or "(none recorded)",
                    self.name,
                )
        for dead, count in by_node.items():
            logger.warning(
                "node {} is gone: node {} handed its {} running jobs back as pending",
                dead or "(none recorded)",
                self.name,
                count,
            )
        return taken

    def _dead_here(self) -> list[int]:
        """Live nodes of this machine whose process is gone (or is this one: a
        restarted container reuses its pid), but this process's own."""
        with _LOCAL_LOCK:
            local = set(_LOCAL)
        return [
            node
            for node, pid in self.nodes.live_on(self.host, local)
            if pid == self.pid or not _alive(pid)
        ]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
