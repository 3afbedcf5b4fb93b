"""A scan's result per image, as Harbor 1.4 stored it, and how it reaches the database.

Every backend ends with, per image, the components it saw and the findings it made;
:func:`image_result` turns them into Harbor's ``components_overview`` and severity with
the one summarizer (:mod:`model.scan.builtin.summary`), so the overview means the same
whatever the backend. An index's result is :func:`index_result` of its children's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from model.db import Store
from model.db.tables import ImgScanOverview, ScanFinding
from model.scan.builtin.osv import Finding
from model.scan.builtin.packages import Package
from model.scan.builtin.severity import Severity
from model.scan.builtin.summary import combine, overall_severity, overview

__all__ = [
    "ImageResult",
    "finding_rows",
    "image_result",
    "index_result",
    "overview_json",
    "save_result",
    "severity_counts",
]

#: Longest text kept in the short (VARCHAR 256) columns of ``img_scan_finding``.
_SHORT_COLUMN = 256


@dataclass(frozen=True)
class ImageResult:
    """What a scan found in one image (or, combined, in an index)."""

    digest: str
    components_overview: Mapping[str, Any]  #: ``{"total": N, "summary": [...]}``
    severity: int  #: Harbor 1.4's scale, 1 (none) to 5 (high)
    findings: tuple[Finding, ...]  #: worst severity first
    details_key: str
    packages: int = 0  #: packages listed by the scanner (0 when it lists none)
    children: tuple[str, ...] = field(default=())  #: child image digests, for an index

    @property
    def components(self) -> int:
        return int(self.components_overview.get("total", 0))


def _order(finding: Finding) -> tuple[int, str, str, str]:
    return (-int(finding.severity), finding.package, finding.version, finding.id)


def image_result(
    digest: str,
    findings: Iterable[Finding],
    packages: Sequence[Package],
    details_key: str,
) -> ImageResult:
    """The result of one image from its packages and the findings for them.

    A finding repeated (same vulnerability, component) is kept once.
    """
    unique = _unique(findings)
    components = overview(unique, packages)
    return ImageResult(
        digest=digest,
        components_overview=components,
        severity=overall_severity(components),
        findings=tuple(unique),
        details_key=details_key,
        packages=len(packages),
    )


def index_result(digest: str, children: Sequence[ImageResult]) -> ImageResult:
    """The result of an index: its overview combines its children's (see
    :func:`model.scan.builtin.summary.combine`), so its severity is the worst child's; its
    findings are the children's, each (vulnerability, component) once. It has no
    details key of its own (no single layer chain holds its details)."""
    components = combine(child.components_overview for child in children)
    return ImageResult(
        digest=digest,
        components_overview=components,
        severity=overall_severity(components),
        findings=tuple(_unique(f for child in children for f in child.findings)),
        details_key="",
        packages=sum(child.packages for child in children),
        children=tuple(child.digest for child in children),
    )


def _unique(findings: Iterable[Finding]) -> list[Finding]:
    seen: dict[tuple[str, str, str, str], Finding] = {}
    for finding in findings:
        key = (finding.id, finding.ecosystem, finding.package, finding.version)
        kept = seen.get(key)
        if kept is None or finding.severity > kept.severity:
            seen[key] = finding
    return sorted(seen.values(), key=_order)


def overview_json(components: Mapping[str, Any]) -> str:
    """``components_overview`` as Harbor 1.4 stored it: Go's ``json.Marshal`` of
    ``{"total", "summary": [{"severity", "count"}]}``, compact, keys in that order."""
    return json.dumps(
        {
            "total": int(components.get("total", 0)),
            "summary": [
                {"severity": int(entry["severity"]), "count": int(entry["count"])}
                for entry in components.get("summary", [])
            ],
        },
        separators=(",", ":"),
    )


def _short(text: str) -> str:
    return text if len(text) <= _SHORT_COLUMN else text[: _SHORT_COLUMN - 1] + "…"


def finding_rows(result: ImageResult, job_id: int) -> list[ScanFinding]:
    """The ``img_scan_finding`` rows of one result."""
    return [
        ScanFinding(
            image_digest=result.digest,
            scan_job_id=job_id,
            vulnerability_id=_short(f.id),
            package=_short(f.package),
            version=_short(f.version),
            fixed_version=_short(f.fixed_version),
            severity=int(f.severity),
            description=f.description,
            link=f.link,
        )
        for f in result.findings
    ]


def save_result(store: Store, result: ImageResult, job_id: int) -> None:
    """Upserts the image's ``img_scan_overview`` row (by digest) and replaces its
    findings, in one transaction."""
    store.save_scan_result(
        ImgScanOverview(
            image_digest=result.digest,
            scan_job_id=job_id,
            severity=int(result.severity),
            components_overview=overview_json(result.components_overview),
            details_key=result.details_key,
        ),
        finding_rows(result, job_id),
    )


def severity_counts(findings: Iterable[Finding]) -> dict[str, int]:
    """Findings per severity name, worst first (for the job log)."""
    items = list(findings)
    counts: dict[str, int] = {}
    for sev in sorted(Severity, reverse=True):
        n = sum(1 for f in items if f.severity == sev)
        if n:
            counts[sev.name.lower()] = n
    return counts
