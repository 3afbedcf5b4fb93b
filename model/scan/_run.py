"""What the states of one scan job share, and what a scanner backend offers them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from model.net import Transport
from model.registry import RegistryClient
from model.scan._plan import ScanPlan
from model.scan._result import ImageResult

if TYPE_CHECKING:
    from loguru import Logger

    from model.jobs import ScanJob, ScanJobParams
    from model.settings import Settings

__all__ = ["Backend", "ScanRun", "http_transport"]


def http_transport() -> Transport:
    """A new connection pool that verifies TLS with one context shared by the process,
    and whose blocked requests a stop of the job cuts short (:mod:`model.net`).

    A scan opens its clients again in each state (every exit closes them), and building
    a TLS context (loading the CA bundle) would be paid again each time.
    """
    return Transport()


class Backend(Protocol):
    """One scanner as the scan states drive it; every method runs in the worker's thread.

    ``initialize`` calls :meth:`prepare` then :meth:`start`; each ``scanlayer``
    transition calls :meth:`step` once; ``summarize`` calls :meth:`results`. Every
    state's exit calls :meth:`release`, so a backend reopens what it needs on demand.
    """

    #: The setting value naming the backend: "builtin", "adapter" or "clair".
    name: str

    def prepare(self) -> None:
        """Checks that the scanner can work (its database, its server), before any pull."""
        ...

    def start(self, plan: ScanPlan) -> bool:
        """Begins the scan of ``plan``; whether ``scanlayer`` steps are needed."""
        ...

    def step(self) -> bool:
        """One bounded piece of work (one layer, one poll); whether more remain."""
        ...

    def results(self) -> list[ImageResult]:
        """The result of each image of the plan, in the plan's order."""
        ...

    def release(self) -> None:
        """Closes connections; idempotent."""
        ...


class ScanRun:
    """The shared state of one scan job's run: the job, the registry client (opened on
    first use, closed by :meth:`release`), the plan once ``initialize`` made it, and
    counters for the totals the job log gets."""

    def __init__(self, job: ScanJob) -> None:
        self.job = job
        self.settings: Settings = job.ctx.settings
        self.plan: ScanPlan | None = None
        self.started = time.perf_counter()
        #: Layer bytes read and seconds spent on layers (for the totals).
        self.layer_bytes = 0
        self.layer_seconds = 0.0
        self.layers_done = 0
        self._registry: RegistryClient | None = None
        self._secrets: set[str] = set()
        password = self.settings.registry_password
        self._password = password.get_secret_value() if password is not None else None
        if self._password:
            self.secret(self._password)

    def secret(self, value: str) -> None:
        """Registers ``value`` (a password, an ``Authorization`` header) as a secret the
        job's log shows as ``***``."""
        if value and value not in self._secrets:
            self._secrets.add(value)
            self.job.secret(value)

    @property
    def log(self) -> Logger:
        """The job's own log."""
        return self.job.logger

    @property
    def params(self) -> ScanJobParams:
        params = self.job.params
        assert params is not None, "the job was not initialised"
        return params

    @property
    def registry(self) -> RegistryClient:
        """The client of the source registry (``registry_url`` and its credentials)."""
        if self._registry is None:
            settings = self.settings
            self._registry = RegistryClient(
                settings.registry_url,
                username=settings.registry_username,
                password=self._password,
                timeout_s=settings.registry_read_timeout_s,
                connect_timeout_s=settings.registry_connect_timeout_s,
                transport=http_transport(),
            )
        return self._registry

    def need_plan(self) -> ScanPlan:
        """The plan made by ``initialize``."""
        if self.plan is None:
            raise RuntimeError("scan states ran out of order: no plan yet")
        return self.plan

    def release(self) -> None:
        """Closes the registry client; the next use opens a new one."""
        client, self._registry = self._registry, None
        if client is not None:
            client.close()
