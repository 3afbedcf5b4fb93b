from __future__ import annotations

from typing import Any

from model.scan.builtin.osv import Finding, VulnDB
from model.scan.builtin.packages import Package
from model.scan.builtin.severity import Severity
from model.scan.builtin.summary import combine, details, match, overall_severity, overview


def deb(name: str, version: str, source: str = "", source_version: str = "") -> Package:
    return Package(
        ecosystem="Debian",
        name=name,
        version=version,
        source_name=source or name,
        source_version=source_version or version,
        path="var/lib/dpkg/status",
        release="12",
    )


def osv(vid: str, ecosystem: str, name: str, fixed: str, severity: str) -> dict[str, Any]:
    return {
        "id": vid,
        "summary": f"{vid} in {name}",
        "database_specific": {"severity": severity},
        "affected": [
            {
                "package": {"ecosystem": ecosystem, "name": name},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}
                ],
            }
        ],
    }


def make_db() -> VulnDB:
    db = VulnDB()
    for record in [
        osv("CVE-1", "Debian:12", "openssl", "3.0.13-1~deb12u1", "CRITICAL"),
        osv("CVE-2", "Debian:12", "openssl", "3.0.12-1", "LOW"),
        osv("CVE-3", "Debian:12", "zlib", "1:1.2.13.dfsg-2", "MEDIUM"),
        osv("CVE-4", "Debian:12", "tar", "1.34+dfsg-1.3", "UNKNOWN"),
        osv("CVE-5", "Debian:12", "glibc", "2.36-9+deb12u1", "NEGLIGIBLE"),
        osv("CVE-6", "PyPI", "jinja2", "3.1.3", "MODERATE"),
    ]:
        db.add(record)
    return db


PACKAGES = [
    deb("libssl3", "3.0.11-1~deb12u2", "openssl"),
    deb("openssl", "3.0.11-1~deb12u2"),  # same source package: the same component
    deb("zlib1g", "1:1.2.13.dfsg-1", "zlib"),
    deb("tar", "1.34+dfsg-1.2"),
    deb("libc6", "2.36-9", "glibc"),
    deb("bash", "5.2.15-2+b2"),
    Package(ecosystem="PyPI", name="Jinja2", version="3.1.2", path="a/METADATA"),
    Package(ecosystem="PyPI", name="Jinja2", version="3.1.2", path="b/METADATA"),
]


def test_match_looks_up_each_component_once_worst_first() -> None:
    findings = match(PACKAGES, make_db())
    assert [(f.id, f.package, f.severity) for f in findings] == [
        ("CVE-1", "openssl", Severity.HIGH),
        ("CVE-6", "Jinja2", Severity.MEDIUM),
        ("CVE-3", "zlib", Severity.MEDIUM),
        ("CVE-2", "openssl", Severity.LOW),
        ("CVE-4", "tar", Severity.UNKNOWN),
        ("CVE-5", "glibc", Severity.NONE),
    ]
    assert findings[0].fixed_version == "3.0.13-1~deb12u1"
    assert findings[0].version == "3.0.11-1~deb12u2"


def test_overview_counts_each_component_once_at_its_worst_severity() -> None:
    findings = match(PACKAGES, make_db())
    result = overview(findings, PACKAGES)
    # components: openssl(5) zlib(4) Jinja2(4) tar(2) glibc(1, negligible) bash(1)
    assert result == {
        "total": 6,
        "summary": [
            {"severity": 5, "count": 1},
            {"severity": 4, "count": 2},
            {"severity": 2, "count": 1},
            {"severity": 1, "count": 2},
        ],
    }
    assert overall_severity(result) == 5


def test_an_image_without_vulnerabilities_is_all_severity_one() -> None:
    packages = [deb("bash", "5.2.15-2+b2"), deb("dash", "0.5.12-2")]
    result = overview([], packages)
    assert result == {"total": 2, "summary": [{"severity": 1, "count": 2}]}
    assert overall_severity(result) == 1


def test_an_image_without_packages_has_an_empty_summary_and_severity_one() -> None:
    result = overview([], [])
    assert result == {"total": 0, "summary": []}
    assert overall_severity(result) == 1


def test_a_finding_outside_the_package_list_still_counts() -> None:
    stray = Finding("CVE-9", "PyPI", "x", "1", "", Severity.LOW, "", "")
    assert overview([stray], []) == {"total": 1, "summary": [{"severity": 3, "count": 1}]}


def test_combine_sums_children_and_keeps_the_worst_severity() -> None:
    amd64 = {"total": 3, "summary": [{"severity": 4, "count": 1}, {"severity": 1, "count": 2}]}
    arm64 = {"total": 4, "summary": [{"severity": 5, "count": 1}, {"severity": 1, "count": 3}]}
    clean = {"total": 2, "summary": [{"severity": 1, "count": 2}]}
    result = combine([amd64, arm64, clean])
    assert result == {
        "total": 9,
        "summary": [
            {"severity": 5, "count": 1},
            {"severity": 4, "count": 1},
            {"severity": 1, "count": 7},
        ],
    }
    assert overall_severity(result) == 5
    assert combine([]) == {"total": 0, "summary": []}


def test_details_are_harbor_vulnerability_items() -> None:
    items = details(match(PACKAGES, make_db()))
    assert items[0] == {
        "id": "CVE-1",
        "severity": 5,
        "package": "openssl",
        "version": "3.0.11-1~deb12u2",
        "description": "CVE-1 in openssl",
        "link": "https://osv.dev/vulnerability/CVE-1",
        "fixedVersion": "3.0.13-1~deb12u1",
    }
