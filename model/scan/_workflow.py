"""The scan job's states and their handlers."""

from __future__ import annotations

import enum
import time

from model.db.tables import ImgScanJob
from model.jobs import JobContext, ScanJob
from model.scan._adapter import AdapterBackend
from model.scan._clair import ClairBackend
from model.scan._plan import plan_scan, resolve_digest
from model.scan._result import ImageResult, index_result, save_result, severity_counts
from model.scan._run import Backend, ScanRun
from model.scan.builtin.backend import BuiltinBackend
from model.scan.builtin.vulndb import VulnDBCache
from model.sm import SM, Job, StateHandler, StatusUpdater
from model.status import Status

__all__ = [
    "TRANSITIONS",
    "ScanState",
    "add_transitions",
    "close_shared",
    "make_backend",
    "open_shared",
]

_MB = 1e6

#: The key of a service's :class:`VulnDBCache` in ``JobContext.resources``.
RESOURCE_KEY = "scan"


class ScanState(enum.StrEnum):
    """The states of a scan job after ``running``, as the original named them."""

    INITIALIZE = "initialize"  #: resolve the tag, read the manifests, plan the layers
    SCAN_LAYER = "scanlayer"  #: one layer (builtin, clair) or one report poll (adapter)
    SUMMARIZE = "summarize"  #: merge, match, store the overview and the findings


#: The scan's transition table (``finished`` and the forced states come from the engine).
TRANSITIONS: tuple[tuple[str, str], ...] = (
    (Status.RUNNING, ScanState.INITIALIZE),
    (ScanState.INITIALIZE, ScanState.SCAN_LAYER),
    (ScanState.INITIALIZE, ScanState.SUMMARIZE),
    (ScanState.SCAN_LAYER, ScanState.SCAN_LAYER),
    (ScanState.SCAN_LAYER, ScanState.SUMMARIZE),
    (ScanState.SUMMARIZE, Status.FINISHED),
)


def open_shared(ctx: JobContext) -> VulnDBCache:
    """The vulnerability databases of the builtin backend, shared by the scan workers of
    the service whose context is ``ctx`` (a database is big; loading it once per scan
    would cost seconds), in ``ctx.resources``: attached by the first call, the scan
    kind's ``open`` hook at the service's start (or a job's, for a context no service
    opened)."""
    return ctx.resource(RESOURCE_KEY, VulnDBCache)


def close_shared(ctx: JobContext) -> None:
    """Drops the databases :func:`open_shared` attached (the scan kind's ``close`` hook,
    at the service's shutdown); safe when there are none."""
    ctx.resources.pop(RESOURCE_KEY, None)


def make_backend(run: ScanRun) -> Backend:
    """The backend the ``scanner`` setting names."""
    scanner = run.settings.scanner
    if scanner == "adapter":
        return AdapterBackend(run)
    if scanner == "clair":
        return ClairBackend(run)
    return BuiltinBackend(run, open_shared(run.job.ctx))


class _State:
    """A scan state: every exit releases the run's connections (idempotent), and so
    does an ``enter`` that fails (the machine then runs the exit of the state it came
    from, not of this one)."""

    def __init__(self, run: ScanRun, backend: Backend) -> None:
        self.run = run
        self.backend = backend

    def enter(self) -> str:
        try:
            return self._enter()
        except BaseException:
            self.exit()
            raise

    def _enter(self) -> str:
        raise NotImplementedError

    def exit(self) -> None:
        self.backend.release()
        self.run.release()


class Initialize(_State):
    """Checks the scanner, resolves the tag to a digest (recorded on the job's row when
    the job had none), reads the manifests and plans the layers."""

    def _enter(self) -> str:
        run, backend = self.run, self.backend
        params = run.params
        run.started = time.perf_counter()
        run.log.info(
            "scan of {}:{}{} with the {} scanner",
            params.repository,
            params.tag,
            f"@{params.digest}" if params.digest else "",
            backend.name,
        )
        backend.prepare()
        registry = run.registry
        digest = resolve_digest(registry, params.repository, params.tag, params.digest)
        if not params.digest:
            run.job.ctx.store.update(ImgScanJob, run.job.id, digest=digest)
            run.log.info("tag {} is {}", params.tag, digest)
        plan = plan_scan(registry, params.repository, params.tag, digest)
        run.plan = plan
        layers = plan.layers()
        run.log.info(
            "{} {}: {} image(s), {} layer(s), {:.1f} MB",
            "index" if plan.index else "image",
            digest,
            len(plan.images),
            len(layers),
            sum(layer.size for layer in layers) / _MB,
        )
        for image in plan.images:
            if plan.index:
                run.log.info("  image {}: {} layer(s)", image.name, len(image.layers))
            for layer in image.foreign:
                run.log.warning(
                    "  layer {} of {} is foreign ({}): not in the registry, not scanned",
                    layer.digest,
                    image.digest,
                    layer.media_type,
                )
        return ScanState.SCAN_LAYER if backend.start(plan) else ScanState.SUMMARIZE


class ScanLayer(_State):
    """One piece of the backend's work: a stop request lands between two of them."""

    def _enter(self) -> str:
        return ScanState.SCAN_LAYER if self.backend.step() else ScanState.SUMMARIZE


class Summarize(_State):
    """Stores each image's overview and findings (and the index's, for an index) and
    logs the totals."""

    def _enter(self) -> str:
        run = self.run
        plan = run.need_plan()
        job_id = run.job.id
        store = run.job.ctx.store
        results = self.backend.results()
        for result in results:
            save_result(store, result, job_id)
            if plan.index:
                self._log_result("image", result)
        top: ImageResult = results[0]
        if plan.index:
            top = index_result(plan.digest, results)
            save_result(store, top, job_id)
        self._log_result("index" if plan.index else "image", top)
        seconds = time.perf_counter() - run.started
        rate = run.layer_bytes / _MB / run.layer_seconds if run.layer_seconds > 0 else 0.0
        run.log.info(
            "totals: {} layer(s), {:.1f} MB in {:.2f} s ({:.0f} MB/s); "
            "{} packages, {} components, {} findings; scan took {:.2f} s",
            run.layers_done,
            run.layer_bytes / _MB,
            run.layer_seconds,
            rate,
            top.packages,
            top.components,
            len(top.findings),
            seconds,
        )
        return Status.FINISHED

    def _log_result(self, what: str, result: ImageResult) -> None:
        counts = severity_counts(result.findings)
        self.run.log.info(
            "{} {}: severity {}, {} components, findings {}",
            what,
            result.digest,
            result.severity,
            result.components,
            ", ".join(f"{n} {sev}" for sev, n in counts.items()) or "none",
        )


def add_transitions(sm: SM, job: Job) -> None:
    """Adds the scan states to ``sm`` (from ``running`` on), with one backend and one
    shared run per job."""
    if not isinstance(job, ScanJob):
        raise TypeError(f"scan transitions need a ScanJob, not {type(job).__name__}")
    run = ScanRun(job)
    backend = make_backend(run)
    handlers: dict[str, StateHandler] = {
        ScanState.INITIALIZE: Initialize(run, backend),
        ScanState.SCAN_LAYER: ScanLayer(run, backend),
        ScanState.SUMMARIZE: Summarize(run, backend),
        Status.FINISHED: StatusUpdater(job, Status.FINISHED),
    }
    for source, target in TRANSITIONS:
        sm.add_transition(source, target, handlers[target])
