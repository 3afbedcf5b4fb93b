"""The ``clair`` backend: Harbor 1.4's way, through Clair v2's API.

``initialize`` checks that Clair answers (``GET /v1/namespaces``) and names every layer
as Harbor 1.4 did (:func:`~model.scan._plan.chain_names`). Each ``scanlayer`` transition
sends one layer, base first: ``POST /v1/layers`` with ``Path`` = the registry's blob URL,
``Headers`` = the ``Authorization`` this side pulls with (fresh for each layer, as a
token may expire), ``ParentName`` = the layer under it, ``Format`` = ``Docker``; Clair
fetches the blob itself and answers ``201``. ``summarize`` reads
``GET /v1/layers/<top layer>?features&vulnerabilities`` per image: every feature is a
component, every vulnerability under it a finding.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from model.registry import RegistryNotFoundError
from model.scan._errors import ScannerFailed
from model.scan._http import ScannerHttp, json_object
from model.scan._plan import Layer, ScanPlan, chain_names
from model.scan._result import ImageResult, image_result
from model.scan._run import ScanRun
from model.scan.builtin.osv import Finding
from model.scan.builtin.packages import Package
from model.scan.builtin.severity import Severity, from_label

__all__ = [
    "ClairBackend",
    "ClairLayer",
    "clair_layers",
    "clair_severity",
    "layer_request",
    "parse_layer",
]

#: Seconds a ``POST /v1/layers`` may take: Clair downloads and indexes the layer first
#: (unless the setting ``scanner_read_timeout_s`` says otherwise).
CLAIR_READ_TIMEOUT_S = 600.0
_MB = 1e6


@dataclass(frozen=True)
class ClairLayer:
    """One layer as Clair knows it."""

    name: str
    parent: str  #: "" for a base layer
    layer: Layer


def clair_layers(plan: ScanPlan) -> list[ClairLayer]:
    """Every layer of every image of ``plan``, each image base first, named and chained
    as Harbor 1.4 did; a layer (with all under it) shared by two images once."""
    seen: dict[str, ClairLayer] = {}
    for image in plan.images:
        names = chain_names([layer.digest for layer in image.layers])
        for i, (name, layer) in enumerate(zip(names, image.layers, strict=True)):
            seen.setdefault(name, ClairLayer(name, names[i - 1] if i else "", layer))
    return list(seen.values())


def layer_request(
    layer: ClairLayer, registry_url: str, repository: str, authorization: str
) -> dict[str, Any]:
    """The body of ``POST /v1/layers`` for one layer (fields left out when empty, as
    Harbor's Go structs did with ``omitempty``)."""
    body: dict[str, Any] = {
        "Name": layer.name,
        "Path": f"{registry_url.rstrip('/')}/v2/{repository}/blobs/{layer.layer.digest}",
        "Format": "Docker",
    }
    if authorization:
        body["Headers"] = {"Authorization": authorization}
    if layer.parent:
        body["ParentName"] = layer.parent
    return {"Layer": body}


def clair_severity(label: object) -> Severity:
    """Harbor 1.4's severity of a Clair label (``ParseClairSev``): Negligible 1, Unknown
    2, Low 3, Medium 4, High and Critical 5. ``Defcon1``, which Harbor 1.4 left to its
    default (unknown), is high here; anything not recognised is unknown."""
    if isinstance(label, str) and label.strip().lower() == "defcon1":
        return Severity.HIGH
    sev = from_label(label)
    return Severity.UNKNOWN if sev is None else sev


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def parse_layer(doc: Mapping[str, Any]) -> tuple[list[Package], list[Finding]]:
    """The components (features) and findings in Clair's answer to
    ``GET /v1/layers/<name>?features&vulnerabilities``.

    A component is (namespace, feature name, version): the namespace
    (``"debian:9"``) keeps apart features of the same name from two package managers.
    ``ValueError`` when the answer has no ``Layer`` object or a feature lacks a name.
    """
    layer = doc.get("Layer")
    if not isinstance(layer, dict):
        raise ValueError("answer has no 'Layer' object")
    default_ns = _text(layer.get("NamespaceName"))
    packages: list[Package] = []
    findings: list[Finding] = []
    for n, feature in enumerate(layer.get("Features") or []):
        if not isinstance(feature, dict) or not _text(feature.get("Name")):
            raise ValueError(f"Features[{n}] has no Name")
        name, version = _text(feature["Name"]), _text(feature.get("Version"))
        namespace = (
            _text(feature.get("NamespaceName")) or default_ns or _text(feature.get("VersionFormat"))
        )
        packages.append(Package(ecosystem=namespace, name=name, version=version))
        for vuln in feature.get("Vulnerabilities") or []:
            if not isinstance(vuln, dict) or not _text(vuln.get("Name")):
                raise ValueError(f"Features[{n}] ({name}) has a vulnerability without a Name")
            findings.append(
                Finding(
                    id=_text(vuln["Name"]),
                    ecosystem=namespace,
                    package=name,
                    version=version,
                    fixed_version=_text(vuln.get("FixedBy")),
                    severity=clair_severity(vuln.get("Severity")),
                    description=_text(vuln.get("Description")),
                    link=_text(vuln.get("Link")),
                )
            )
    return packages, findings


class ClairBackend:
    """See the module docstring."""

    name = "clair"

    def __init__(self, run: ScanRun) -> None:
        self.run = run
        self.http = ScannerHttp(
            "clair",
            run.settings.clair_url or "",
            connect_timeout_s=run.settings.scanner_connect_timeout_s,
            read_timeout_s=run.settings.scanner_read_timeout_s or CLAIR_READ_TIMEOUT_S,
        )
        self._todo: list[ClairLayer] = []
        self._done = 0

    def prepare(self) -> None:
        """Checks that Clair answers, before anything is pulled."""
        response = self.http.request("GET", "/v1/namespaces", what="list namespaces", expect=(200,))
        doc = json_object(response, "list namespaces", self.http.scanner, self.http.url)
        namespaces = doc.get("Namespaces")
        self.run.log.info(
            "clair {}: {} namespaces",
            self.http.url,
            len(namespaces) if isinstance(namespaces, list) else "unknown",
        )

    def start(self, plan: ScanPlan) -> bool:
        self._todo = clair_layers(plan)
        self._done = 0
        return bool(self._todo)

    def step(self) -> bool:
        """Sends the next layer to Clair, which fetches and indexes it."""
        run = self.run
        plan = run.need_plan()
        layer = self._todo[self._done]
        registry = run.registry
        # A HEAD first: it checks the blob is there, and teaches a fresh client the
        # registry's auth scheme, so the header handed to Clair is the one it wants.
        if not registry.blob_exists(plan.repository, layer.layer.digest):
            raise RegistryNotFoundError(
                "scan layer",
                registry=registry.url,
                repository=plan.repository,
                reference=layer.layer.digest,
                detail="the manifest lists a layer the registry does not have",
            )
        authorization = registry.authorization(plan.repository).get("Authorization", "")
        if authorization:
            run.secret(authorization)
        start = time.perf_counter()
        self.http.request(
            "POST",
            "/v1/layers",
            what=f"index layer {layer.layer.digest}",
            expect=(200, 201),
            body=layer_request(layer, run.settings.registry_url, plan.repository, authorization),
        )
        seconds = time.perf_counter() - start
        self._done += 1
        run.layer_bytes += layer.layer.size
        run.layer_seconds += seconds
        run.layers_done += 1
        run.log.info(
            "layer {}/{} {}: {} bytes ({:.1f} MB), indexed by clair as {}, {:.2f} s",
            self._done,
            len(self._todo),
            layer.layer.digest,
            layer.layer.size,
            layer.layer.size / _MB,
            layer.name,
            seconds,
        )
        return self._done < len(self._todo)

    def results(self) -> list[ImageResult]:
        """Reads each image's features and vulnerabilities from its top layer."""
        plan = self.run.need_plan()
        out: list[ImageResult] = []
        for image in plan.images:
            names = chain_names([layer.digest for layer in image.layers])
            if not names:
                out.append(image_result(image.digest, (), (), ""))
                continue
            top = names[-1]
            response = self.http.request(
                "GET",
                f"/v1/layers/{top}?features&vulnerabilities",
                what=f"read layer {top} of {image.digest}",
                expect=(200,),
            )
            doc = json_object(response, "read layer", self.http.scanner, self.http.url)
            try:
                packages, findings = parse_layer(doc)
            except ValueError as exc:
                raise ScannerFailed(
                    self.http.scanner, self.http.url, f"layer {top}: {exc}"
                ) from None
            out.append(image_result(image.digest, findings, packages, top))
        return out

    def release(self) -> None:
        self.http.close()
