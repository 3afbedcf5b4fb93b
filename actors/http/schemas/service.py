"""Bodies of the service routes: pools, nodes, stats, health."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PoolStatsOut(BaseModel):
    """One pool: its workers, the jobs they run, its queue, its jobs per status."""

    size: int
    busy: int
    running: list[int]
    queued: int
    delayed: int
    unrecorded: int = Field(
        default=0,
        description="Jobs whose last status the database refused; the pool writes them "
        "again until they land",
    )
    claim_failing: bool = Field(
        default=False,
        description="The pool's last claim failed; it claims again until claims work",
    )
    statuses: dict[str, int]


class NodeLoad(BaseModel):
    """One pool of a node, as the node's last beat recorded it."""

    size: int = Field(description="Workers of the pool")
    busy: int = Field(description="Workers running a job")


class NodeSummary(BaseModel):
    """A live node as ``/api/stats?nodes=true`` shows it."""

    name: str
    age_s: float = Field(description="Seconds since its last beat, by the database's clock")
    dead: bool = Field(description="Its last beat is older than node_timeout")
    pools: dict[str, NodeLoad] = Field(description="Per kind, at its last beat")


class NodeOut(BaseModel):
    """One node (a started service) sharing the database."""

    id: int
    name: str
    state: Literal["live", "gone", "stopped"] = Field(
        description="live: beating (see ``dead``); gone: found dead by another node, "
        "which took its jobs over; stopped: shut down, its jobs handed back"
    )
    dead: bool = Field(description="Live, but its last beat is older than node_timeout")
    self: bool = Field(description="The node that answered this request")
    host: str
    pid: int
    version: str
    started: datetime
    heartbeat: datetime = Field(description="Its last beat")
    age_s: float = Field(description="Seconds since its last beat, by the database's clock")
    ended: datetime | None = Field(description="When it stopped or was found gone")
    ended_by: str = Field(description="The node that found it gone (else empty)")
    pools: dict[str, NodeLoad] = Field(description="Per kind, at its last beat")


class PoolTotals(BaseModel):
    """One kind summed over the live nodes whose beat is not overdue."""

    size: int
    busy: int


class NodesOut(BaseModel):
    """``GET /api/nodes``: the nodes, newest first, and the live ones' totals."""

    node: str = Field(description="The name of the node that answered")
    node_timeout: float = Field(description="Seconds without a beat after which a node is dead")
    nodes: list[NodeOut]
    totals: dict[str, PoolTotals] = Field(
        description="Per kind: workers and busy ones summed over the live nodes not overdue"
    )


class StatsOut(BaseModel):
    """``GET /api/stats``: this node's pools by kind name; with ``?nodes=true`` also
    ``nodes`` (the live nodes) and ``totals`` (per kind, over the live nodes not
    overdue)."""

    model_config = ConfigDict(extra="allow")
    # The pools, by kind name.
    __pydantic_extra__: dict[str, PoolStatsOut] = Field(init=False)

    nodes: list[NodeSummary] | None = Field(
        default=None, description="With ?nodes=true: the live nodes, newest first"
    )
    totals: dict[str, PoolTotals] | None = Field(
        default=None,
        description="With ?nodes=true: per kind, workers and busy ones over the live nodes "
        "not overdue",
    )


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    cause: str | None = Field(default=None, description="Why the service is unavailable")
