"""The builtin backend: layers streamed from the registry through the scanner library,
packages matched against an OSV database. No server."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator

from model.registry import DigestMismatchError, RegistryContentError
from model.scan._plan import Layer, ScanPlan, chain_names
from model.scan._result import ImageResult, image_result
from model.scan._run import ScanRun
from model.scan.builtin.osv import VulnDB
from model.scan.builtin.packages import LayerScan, merge_layers, scan_layer
from model.scan.builtin.summary import match
from model.scan.builtin.vulndb import VulnDBCache

__all__ = ["BuiltinBackend", "VerifiedBlob"]

_MB = 1e6


class VerifiedBlob:
    """The chunks of one layer blob, hashed and counted as they pass; :meth:`finish`
    reads what is left and checks the bytes against the layer's digest and size, so a
    layer is never reported on bytes the registry should not have sent."""

    def __init__(
        self, chunks: Iterable[bytes], layer: Layer, *, registry: str, repository: str
    ) -> None:
        self._chunks = iter(chunks)
        self.layer = layer
        self._registry = registry
        self._repository = repository
        algorithm = layer.digest.split(":", 1)[0]
        try:
            self._hash: hashlib._Hash | None = hashlib.new(algorithm)
        except ValueError:
            self._hash = None  # an algorithm hashlib lacks: nothing to compare with
        #: Bytes passed so far.
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        update = self._hash.update if self._hash is not None else None
        for chunk in self._chunks:
            if update is not None:
                update(chunk)
            self.size += len(chunk)
            yield chunk

    def finish(self) -> None:
        """Reads the rest of the blob; raises :class:`DigestMismatchError` or
        :class:`RegistryContentError` (wrong size) when the bytes are not the layer's."""
        for _ in self:
            pass
        if self._hash is not None:
            actual = f"{self._hash.name}:{self._hash.hexdigest()}"
            if actual != self.layer.digest:
                raise DigestMismatchError(
                    "scan layer",
                    registry=self._registry,
                    repository=self._repository,
                    expected=self.layer.digest,
                    actual=actual,
                )
        if self.layer.size and self.size != self.layer.size:
            raise RegistryContentError(
                "scan layer",
                registry=self._registry,
                repository=self._repository,
                reference=self.layer.digest,
                detail=f"read {self.size} bytes, the manifest says {self.layer.size}",
            )


class BuiltinBackend:
    """Scans in this process: one layer per :meth:`step`; see the module docstring."""

    name = "builtin"

    def __init__(self, run: ScanRun, databases: VulnDBCache) -> None:
        self.run = run
        self._databases = databases
        self._db: VulnDB | None = None
        self._plan: ScanPlan | None = None
        self._todo: list[Layer] = []
        self._scans: dict[str, LayerScan] = {}

    def prepare(self) -> None:
        """Loads the vulnerability database (or takes it from the cache); raises
        :class:`~model.scan.builtin.errors.VulnDBError` naming it when it cannot be read."""
        path = self.run.settings.vuln_db_path
        log = self.run.log
        if path is None:
            log.warning(
                "no vulnerability database configured (setting vuln_db_path): "
                "packages are listed, no vulnerability is matched"
            )
            return
        start = time.perf_counter()
        self._db, loaded = self._databases.get(path)
        log.info(
            "vulnerability database {}: {} records ({})",
            path,
            len(self._db),
            f"loaded in {time.perf_counter() - start:.2f} s" if loaded else "already loaded",
        )

    def start(self, plan: ScanPlan) -> bool:
        self._plan = plan
        self._todo = plan.layers()
        self._scans = {}
        return bool(self._todo)

    def step(self) -> bool:
        """Streams the next layer through :func:`~model.scan.builtin.packages.scan_layer`."""
        run = self.run
        plan = run.need_plan()
        index = len(self._scans)
        layer = self._todo[index]
        start = time.perf_counter()
        registry = run.registry
        with registry.open_blob(plan.repository, layer.digest) as stream:
            blob = VerifiedBlob(stream, layer, registry=registry.url, repository=plan.repository)
            scan = scan_layer(blob, layer.digest)
            blob.finish()
        seconds = time.perf_counter() - start
        self._scans[layer.digest] = scan
        run.layer_bytes += blob.size
        run.layer_seconds += seconds
        run.layers_done += 1
        packages = sum(len(found) for found in scan.files.values())
        run.log.info(
            "layer {}/{} {}: {} bytes {} ({:.1f} MB), {} packages in {} databases, "
            "{} whiteouts, {:.2f} s ({:.0f} MB/s)",
            index + 1,
            len(self._todo),
            layer.digest,
            blob.size,
            scan.compression,
            blob.size / _MB,
            packages,
            len(scan.files),
            len(scan.whiteouts) + len(scan.opaque_dirs),
            seconds,
            blob.size / _MB / seconds if seconds > 0 else 0.0,
        )
        return len(self._scans) < len(self._todo)

    def results(self) -> list[ImageResult]:
        """Per image: its layers merged (whiteouts applied), its packages matched."""
        plan = self.run.need_plan()
        out: list[ImageResult] = []
        for image in plan.images:
            digests = [layer.digest for layer in image.layers]
            packages = merge_layers([self._scans[d] for d in digests])
            findings = match(packages, self._db) if self._db is not None else []
            names = chain_names(digests)
            out.append(image_result(image.digest, findings, packages, names[-1] if names else ""))
        return out

    def release(self) -> None:
        return None
