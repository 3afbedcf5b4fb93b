"""Findings for an image's packages, and Harbor 1.4's ``components_overview``.

Harbor 1.4 (``TransformVuln`` in ``src/common/utils/clair/utils.go``) stores, per image,
``{"total": N, "summary": [{"severity": S, "count": C}, ...]}``: N components, each
counted once at its worst severity (1 when it has no vulnerability), one entry per
severity that has components, and the image's severity is the worst component's (1 for
an image without components). Harbor built ``summary`` from a Go map, so its order was
unspecified; here it is by severity, worst first, and zero counts are left out, as
Harbor never emitted them.

A component is what Clair called a feature and what OSV records name: a package's
(ecosystem, source name, source version). Several binary packages built from one
Debian source package are one component; a package installed twice (two Python
environments, say) is one component.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from model.scan.builtin.osv import Finding, VulnDB
from model.scan.builtin.packages import Package
from model.scan.builtin.severity import Severity

__all__ = [
    "combine",
    "component",
    "details",
    "match",
    "overall_severity",
    "overview",
]


def component(package: Package) -> tuple[str, str, str]:
    """The component a package belongs to: (ecosystem family, match name, match version)."""
    return package.ecosystem, package.match_name, package.match_version


def match(packages: Iterable[Package], db: VulnDB) -> list[Finding]:
    """Every finding of ``db`` for the components of ``packages``.

    Each component is looked up once, with its OS release (``"Debian:12"``) so that
    :meth:`VulnDB.match` can prefer the records of that release. Ordered worst
    severity first, then by package and vulnerability id.
    """
    seen: set[tuple[str, str, str]] = set()
    findings: list[Finding] = []
    for package in packages:
        key = (package.osv_ecosystem, package.match_name, package.match_version)
        if key in seen:
            continue
        seen.add(key)
        findings.extend(db.match(*key))
    findings.sort(key=lambda f: (-f.severity, f.package, f.version, f.id))
    return findings


def details(findings: Iterable[Finding]) -> list[dict[str, Any]]:
    """The findings as Harbor 1.4's list of ``VulnerabilityItem`` objects."""
    return [finding.to_harbor() for finding in findings]


def overview(findings: Iterable[Finding], packages: Iterable[Package]) -> dict[str, Any]:
    """Harbor 1.4's ``components_overview`` of an image.

    ``total`` is the number of components of ``packages`` (see :func:`component`);
    each is counted once in ``summary`` at its worst finding's severity, or at 1
    (none) without findings. A finding whose component is not among ``packages``
    still counts as a component, so no severity is lost.
    """
    worst: dict[tuple[str, str, str], Severity] = {
        component(package): Severity.NONE for package in packages
    }
    for finding in findings:
        key = (finding.ecosystem, finding.package, finding.version)
        worst[key] = max(worst.get(key, Severity.NONE), finding.severity)
    return _overview(len(worst), Counter(worst.values()))


def _overview(total: int, counts: Mapping[int, int]) -> dict[str, Any]:
    return {
        "total": total,
        "summary": [
            {"severity": int(sev), "count": count}
            for sev, count in sorted(counts.items(), reverse=True)
            if count > 0
        ],
    }


def overall_severity(components_overview: Mapping[str, Any]) -> int:
    """The image's severity: the worst severity in the overview's summary, else 1."""
    severities = [int(entry["severity"]) for entry in components_overview.get("summary", [])]
    return max(severities, default=int(Severity.NONE))


def combine(overviews: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The overview of an index (manifest list) from its children's overviews.

    Totals and per-severity counts are summed: a component present in several children
    (the same package on amd64 and arm64) counts once per child, since summaries do
    not say which components they counted. The index's severity, by
    :func:`overall_severity`, is then the worst child's.
    """
    total = 0
    counts: Counter[int] = Counter()
    for item in overviews:
        total += int(item.get("total", 0))
        for entry in item.get("summary", []):
            counts[int(entry["severity"])] += int(entry["count"])
    return _overview(total, counts)
