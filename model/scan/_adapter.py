"""The ``adapter`` backend: a Harbor pluggable scanner (Scanner Adapter API v1.0/v1.1),
such as the Trivy adapter, scans each image; this side sends the requests and polls.

``initialize`` reads ``GET /api/v1/metadata`` (the scanner must consume the image's
manifest type and produce a Harbor vulnerability report, v1.1 preferred) and sends one
``POST /api/v1/scan`` per image. Each ``scanlayer`` transition then polls one report
(``GET /api/v1/scan/{id}/report``): ``302`` with ``Refresh-After`` means not yet, and the
next poll waits that long, in slices of at most :data:`POLL_SLICE_S` per transition so a
stop request still lands within that time. A report lists vulnerable packages only, so
an image's ``total`` counts its vulnerable components.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from model.scan._errors import ScannerFailed, ScannerUnavailable
from model.scan._http import ScannerHttp, json_object
from model.scan._plan import ImagePlan, ScanPlan
from model.scan._result import ImageResult, image_result
from model.scan._run import ScanRun
from model.scan.builtin.osv import Finding
from model.scan.builtin.severity import Severity, from_label

__all__ = [
    "MIME_METADATA",
    "MIME_REPORT_V1_0",
    "MIME_REPORT_V1_1",
    "MIME_SCAN_REQUEST",
    "MIME_SCAN_RESPONSE",
    "POLL_SLICE_S",
    "AdapterBackend",
    "AdapterMetadata",
    "adapter_severity",
    "mime_key",
    "parse_metadata",
    "parse_report",
]

API_PREFIX = "/api/v1"
MIME_METADATA = "application/vnd.scanner.adapter.metadata+json; version=1.0"
MIME_SCAN_REQUEST = "application/vnd.scanner.adapter.scan.request+json; version=1.0"
MIME_SCAN_RESPONSE = "application/vnd.scanner.adapter.scan.response+json; version=1.0"
MIME_REPORT_V1_1 = "application/vnd.security.vulnerability.report; version=1.1"
MIME_REPORT_V1_0 = "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0"
#: Report types this side reads, preferred first.
REPORT_TYPES = (MIME_REPORT_V1_1, MIME_REPORT_V1_0)

#: Longest wait in one ``scanlayer`` transition, in seconds (bounds a stop's delay).
POLL_SLICE_S = 0.5
#: Seconds between polls when a ``302`` has no usable ``Refresh-After``.
DEFAULT_REFRESH_S = 5.0
#: Shortest and longest ``Refresh-After`` honoured, in seconds.
MIN_REFRESH_S = 0.5
MAX_REFRESH_S = 60.0
#: Seconds after the scan requests by which every report must be ready.
REPORT_TIMEOUT_S = 1800.0
#: Seconds a request to the adapter may wait for the next bytes of an answer, unless the
#: setting ``scanner_read_timeout_s`` says otherwise.
ADAPTER_TIMEOUT_S = 30.0


def mime_key(media_type: str) -> str:
    """A MIME type in comparable form: lower case, no blanks around ``;`` and ``=``."""
    parts = [p.strip().replace(" ", "") for p in media_type.lower().split(";")]
    return ";".join(p for p in parts if p)


@dataclass(frozen=True)
class AdapterMetadata:
    """What ``GET /metadata`` says that matters here."""

    scanner: str  #: "name version (vendor)"
    consumes: frozenset[str]  #: manifest types it scans, as :func:`mime_key`
    report_type: str  #: the report type to ask for (one of :data:`REPORT_TYPES`)


def parse_metadata(doc: Mapping[str, Any]) -> AdapterMetadata:
    """The adapter's metadata; ``ValueError`` when it cannot scan for vulnerabilities
    in a Harbor report type. Capabilities of another ``type`` (v1.2's ``sbom``) are
    ignored."""
    scanner = doc.get("scanner")
    if not isinstance(scanner, dict):
        raise ValueError("metadata has no 'scanner' object")
    label = " ".join(str(scanner.get(k) or "") for k in ("name", "version")).strip()
    if scanner.get("vendor"):
        label += f" ({scanner['vendor']})"
    capabilities = doc.get("capabilities")
    if not isinstance(capabilities, list):
        raise ValueError("metadata has no 'capabilities' list")
    consumes: set[str] = set()
    produces: set[str] = set()
    for capability in capabilities:
        if not isinstance(capability, dict):
            continue
        if capability.get("type", "vulnerability") != "vulnerability":
            continue
        wanted = [
            mime_key(m) for m in capability.get("produces_mime_types") or [] if isinstance(m, str)
        ]
        if not any(mime_key(t) in wanted for t in REPORT_TYPES):
            continue
        produces.update(wanted)
        consumes.update(
            mime_key(m) for m in capability.get("consumes_mime_types") or [] if isinstance(m, str)
        )
    report = next((t for t in REPORT_TYPES if mime_key(t) in produces), None)
    if report is None:
        raise ValueError("no capability produces a Harbor vulnerability report (v1.0 or v1.1)")
    return AdapterMetadata(label or "unnamed scanner", frozenset(consumes), report)


def adapter_severity(label: object) -> Severity:
    """Harbor 1.4's severity of a report's ``Unknown``/``Negligible``/…/``Critical``."""
    sev = from_label(label)
    return Severity.UNKNOWN if sev is None else sev


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def parse_report(doc: Mapping[str, Any]) -> list[Finding]:
    """The findings of a Harbor vulnerability report (v1.0 or v1.1).

    ``ValueError`` for a report without a ``vulnerabilities`` list or with an item that
    lacks ``id`` or ``package``: a report only partly understood is not stored.
    """
    items = doc.get("vulnerabilities")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise ValueError("'vulnerabilities' is not a list")
    findings: list[Finding] = []
    for n, item in enumerate(items):
        if (
            not isinstance(item, dict)
            or not _text(item.get("id"))
            or not _text(item.get("package"))
        ):
            raise ValueError(f"vulnerabilities[{n}] has no id or package")
        links = [u for u in item.get("links") or [] if isinstance(u, str) and u]
        findings.append(
            Finding(
                id=_text(item["id"]),
                ecosystem="",
                package=_text(item["package"]),
                version=_text(item.get("version")),
                fixed_version=_text(item.get("fix_version")),
                severity=adapter_severity(item.get("severity")),
                description=_text(item.get("description")),
                link=links[0] if links else "",
            )
        )
    return findings


@dataclass
class _Pending:
    image: ImagePlan
    scan_id: str
    due: float  #: monotonic time of the next poll
    polls: int = 0


class AdapterBackend:
    """See the module docstring. ``clock`` and ``wait`` are for tests."""

    name = "adapter"

    def __init__(
        self,
        run: ScanRun,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], None] = time.sleep,
    ) -> None:
        self.run = run
        url = run.settings.scanner_url or ""
        if not url.rstrip("/").endswith(API_PREFIX):
            url = url.rstrip("/") + API_PREFIX
        settings = run.settings
        self.http = ScannerHttp(
            "scanner adapter",
            url,
            connect_timeout_s=settings.scanner_connect_timeout_s,
            read_timeout_s=settings.scanner_read_timeout_s or ADAPTER_TIMEOUT_S,
        )
        self._clock = clock
        self._wait = wait
        self.metadata: AdapterMetadata | None = None
        self._pending: list[_Pending] = []
        self._results: dict[str, ImageResult] = {}
        self._deadline = 0.0

    def prepare(self) -> None:
        """Reads the adapter's metadata; raises :class:`ScannerFailed` when it cannot
        produce a Harbor vulnerability report."""
        response = self.http.request(
            "GET",
            "/metadata",
            what="read metadata",
            expect=(200,),
            headers={"Accept": f"{MIME_METADATA}, application/json"},
        )
        doc = json_object(response, "read metadata", self.http.scanner, self.http.url)
        try:
            self.metadata = parse_metadata(doc)
        except ValueError as exc:
            raise ScannerFailed(self.http.scanner, self.http.url, str(exc)) from None
        self.run.log.info(
            "scanner adapter {}: {}, reports as {}",
            self.http.url,
            self.metadata.scanner,
            self.metadata.report_type,
        )

    def _registry_authorization(self) -> str:
        """Basic credentials when configured (the spec's robot account), else the
        header this side pulls with (a token of an anonymous token registry), else ""."""
        settings = self.run.settings
        if settings.registry_username:
            password = settings.registry_password
            secret = password.get_secret_value() if password is not None else ""
            raw = f"{settings.registry_username}:{secret}".encode()
            value = "Basic " + base64.b64encode(raw).decode()
        else:
            value = self.run.registry.authorization(self.run.need_plan().repository).get(
                "Authorization", ""
            )
        if value:
            self.run.secret(value)
        return value

    def start(self, plan: ScanPlan) -> bool:
        """Sends one scan request per image; raises :class:`ScannerFailed` when the
        adapter does not take an image's manifest type."""
        meta = self.metadata
        assert meta is not None, "prepare() first"
        registry: dict[str, str] = {"url": self.run.settings.registry_url}
        authorization = self._registry_authorization()
        if authorization:
            registry["authorization"] = authorization
        self._pending = []
        self._results = {}
        for image in plan.images:
            if mime_key(image.media_type) not in meta.consumes:
                raise ScannerFailed(
                    self.http.scanner,
                    self.http.url,
                    f"{meta.scanner} does not scan {image.media_type} ({image.digest})",
                )
            request = {
                "registry": registry,
                "artifact": {
                    "repository": plan.repository,
                    "digest": image.digest,
                    "tag": plan.tag,
                    "mime_type": image.media_type,
                },
            }
            response = self.http.request(
                "POST",
                "/scan",
                what=f"request scan of {image.digest}",
                expect=(202,),
                headers={"Accept": f"{MIME_SCAN_RESPONSE}, application/json"},
                body=request,
                content_type=MIME_SCAN_REQUEST,
            )
            doc = json_object(response, "request scan", self.http.scanner, self.http.url)
            scan_id = doc.get("id")
            if not isinstance(scan_id, str) or not scan_id:
                raise ScannerFailed(
                    self.http.scanner, self.http.url, "scan request answered without an id"
                )
            self._pending.append(_Pending(image, scan_id, self._clock()))
            self.run.log.info("image {}: scan request {} accepted", image.name, scan_id)
        self._deadline = self._clock() + REPORT_TIMEOUT_S
        return bool(self._pending)

    def step(self) -> bool:
        """Polls the first report not in yet (or waits for its time, one slice at most)."""
        pending = self._pending[0]
        now = self._clock()
        if now > self._deadline:
            raise ScannerFailed(
                self.http.scanner,
                self.http.url,
                f"no report for {pending.image.digest} after {REPORT_TIMEOUT_S:g} s "
                f"({pending.polls} polls of scan request {pending.scan_id})",
            )
        if now < pending.due:
            # The engine has no timed wake-up: wait here, briefly, then take another
            # transition, so a stop request is handled between two slices.
            self._wait(min(pending.due - now, POLL_SLICE_S))
            return True
        assert self.metadata is not None
        response = self.http.request(
            "GET",
            f"/scan/{pending.scan_id}/report",
            what=f"read report {pending.scan_id}",
            expect=(200, 302, 404),
            headers={"Accept": self.metadata.report_type},
        )
        pending.polls += 1
        if response.status_code == 404:
            raise ScannerUnavailable(
                self.http.scanner,
                self.http.url,
                f"scan request {pending.scan_id} is unknown to the adapter (restarted?)",
            )
        if response.status_code == 302:
            refresh = _refresh_after(response.headers.get("refresh-after"))
            pending.due = self._clock() + refresh
            self.run.log.info(
                "image {}: report not ready, next poll in {:g} s", pending.image.name, refresh
            )
            return True
        doc = json_object(response, "read report", self.http.scanner, self.http.url)
        try:
            findings = parse_report(doc)
        except ValueError as exc:
            raise ScannerFailed(
                self.http.scanner, self.http.url, f"report {pending.scan_id}: {exc}"
            ) from None
        self._results[pending.image.digest] = image_result(
            pending.image.digest, findings, (), pending.scan_id
        )
        self.run.log.info(
            "image {}: report {} has {} vulnerabilities",
            pending.image.name,
            pending.scan_id,
            len(findings),
        )
        self._pending.pop(0)
        return bool(self._pending)

    def results(self) -> list[ImageResult]:
        plan = self.run.need_plan()
        return [self._results[image.digest] for image in plan.images]

    def release(self) -> None:
        self.http.close()


def _refresh_after(value: str | None) -> float:
    try:
        seconds = float(value) if value else DEFAULT_REFRESH_S
    except ValueError:
        seconds = DEFAULT_REFRESH_S
    return min(max(seconds, MIN_REFRESH_S), MAX_REFRESH_S)
