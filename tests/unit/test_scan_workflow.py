"""The scan workflow's pure parts: plans, Clair names and bodies, adapter metadata and
reports, results as Harbor stored them, the database cache, the scanner settings."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from model.errors import ConfigError, RetryableError
from model.registry import Manifest
from model.scan import TRANSITIONS, ImageNotFound, NotAnImage, ScannerUnavailable
from model.scan._adapter import (
    MIME_REPORT_V1_0,
    MIME_REPORT_V1_1,
    adapter_severity,
    mime_key,
    parse_metadata,
    parse_report,
)
from model.scan._clair import ClairLayer, clair_layers, clair_severity, layer_request, parse_layer
from model.scan._plan import ImagePlan, Layer, ScanPlan, chain_names, plan_scan
from model.scan._result import image_result, index_result, overview_json, severity_counts
from model.scan.builtin.backend import VerifiedBlob
from model.scan.builtin.errors import VulnDBError
from model.scan.builtin.osv import Finding
from model.scan.builtin.packages import Package
from model.scan.builtin.severity import Severity
from model.scan.builtin.vulndb import VulnDBCache
from model.settings import load_settings
from model.status import Status

DOCKER = "application/vnd.docker.distribution.manifest.v2+json"
LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def digest(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


def finding(vid: str, package: str, version: str, sev: Severity, eco: str = "Debian") -> Finding:
    return Finding(vid, eco, package, version, "", sev, f"{vid} text", f"https://x/{vid}")


# -- plans and Clair names -----------------------------------------------------------


def test_chain_names_are_harbor_14s_sha256_of_the_digest_chain() -> None:
    d = [digest(1), digest(2), digest(3)]
    names = chain_names(d)
    assert names == [
        hashlib.sha256(f"{d[0]}-".encode()).hexdigest(),
        hashlib.sha256(f"{d[0]}-{d[1]}-".encode()).hexdigest(),
        hashlib.sha256(f"{d[0]}-{d[1]}-{d[2]}-".encode()).hexdigest(),
    ]
    # as Go's fmt.Sprintf("%x", sha256.Sum256([]byte("sha256:aa-sha256:bb-")))
    assert chain_names(["sha256:aa", "sha256:bb"])[-1] == (
        "6c04e34238381affb27c15282e5e4d9d84881d785d4a4c8183eeb2177a122007"
    )
    assert chain_names([]) == []


def plan_of(*images: tuple[str, list[str]]) -> ScanPlan:
    return ScanPlan(
        "lib/app",
        "v1",
        digest(99),
        DOCKER,
        tuple(
            ImagePlan(name, DOCKER, "", tuple(Layer(d, 10, LAYER) for d in layers))
            for name, layers in images
        ),
        index=len(images) > 1,
    )


def test_a_plan_lists_a_layer_two_images_share_once_base_first() -> None:
    plan = plan_of(("a", [digest(1), digest(2)]), ("b", [digest(1), digest(3)]))
    assert [layer.digest for layer in plan.layers()] == [digest(1), digest(2), digest(3)]


def test_clair_layers_chain_parents_per_image_and_skip_shared_chains() -> None:
    plan = plan_of(("a", [digest(1), digest(2)]), ("b", [digest(1), digest(3)]))
    a, b = chain_names([digest(1), digest(2)]), chain_names([digest(1), digest(3)])
    assert clair_layers(plan) == [
        ClairLayer(a[0], "", Layer(digest(1), 10, LAYER)),
        ClairLayer(a[1], a[0], Layer(digest(2), 10, LAYER)),
        ClairLayer(b[1], b[0], Layer(digest(3), 10, LAYER)),
    ]
    assert a[0] == b[0]


def test_a_clair_layer_request_leaves_out_empty_parent_and_headers() -> None:
    base = ClairLayer("n1", "", Layer(digest(1), 10, LAYER))
    assert layer_request(base, "http://reg:5000/", "lib/app", "") == {
        "Layer": {
            "Name": "n1",
            "Path": f"http://reg:5000/v2/lib/app/blobs/{digest(1)}",
            "Format": "Docker",
        }
    }
    top = ClairLayer("n2", "n1", Layer(digest(2), 10, LAYER))
    body = layer_request(top, "http://reg:5000", "lib/app", "Bearer t")["Layer"]
    assert body["ParentName"] == "n1"
    assert body["Headers"] == {"Authorization": "Bearer t"}


class FakeRegistry:
    url = "http://reg"

    def __init__(self, manifests: dict[str, dict[str, Any]]) -> None:
        self.manifests = {k: json.dumps(v).encode() for k, v in manifests.items()}

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        return Manifest.parse(self.manifests[reference])

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        return reference if reference in self.manifests else None


def manifest(*layers: tuple[str, str]) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": DOCKER,
        "config": {"mediaType": "x", "digest": digest(0), "size": 2},
        "layers": [{"mediaType": mt, "digest": d, "size": 5} for d, mt in layers],
    }


def test_an_index_plan_skips_attestations_and_artifacts_and_keeps_foreign_layers_apart() -> None:
    foreign = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    registry = FakeRegistry(
        {
            digest(10): {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    {
                        "mediaType": DOCKER,
                        "digest": digest(11),
                        "size": 1,
                        "platform": {"os": "linux", "architecture": "amd64"},
                    },
                    {
                        "mediaType": DOCKER,
                        "digest": digest(12),
                        "size": 1,
                        "platform": {"os": "unknown", "architecture": "unknown"},
                    },
                    {"mediaType": DOCKER, "digest": digest(13), "size": 1},
                ],
            },
            digest(11): manifest((digest(1), foreign), (digest(2), LAYER)),
            digest(13): manifest(
                (digest(3), "application/vnd.cncf.helm.chart.content.v1.tar+gzip")
            ),
        }
    )
    plan = plan_scan(registry, "lib/app", "v1", digest(10))  # type: ignore[arg-type]
    assert plan.index
    (image,) = plan.images
    assert (image.digest, image.platform) == (digest(11), "linux/amd64")
    assert [layer.digest for layer in image.layers] == [digest(2)]
    assert [layer.digest for layer in image.foreign] == [digest(1)]


def test_an_artifact_that_is_not_an_image_is_refused_with_its_media_type() -> None:
    helm = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
    registry = FakeRegistry({digest(5): manifest((digest(1), helm))})
    with pytest.raises(NotAnImage, match=r"has media type 'application/vnd\.cncf\.helm"):
        plan_scan(registry, "lib/chart", "v1", digest(5))  # type: ignore[arg-type]


def test_image_not_found_names_repository_reference_and_registry() -> None:
    assert str(ImageNotFound("http://reg", "lib/app", "v1")) == (
        "image lib/app:v1 not found in registry http://reg"
    )
    assert "lib/app@sha256:" in str(ImageNotFound("http://reg", "lib/app", digest(1)))


def test_an_unavailable_scanner_is_retryable_with_its_delay() -> None:
    error = ScannerUnavailable("clair", "http://clair", "down", retry_after=7)
    assert isinstance(error, RetryableError)
    assert error.retry_after == 7
    assert str(error) == "clair at http://clair unavailable: down"


def test_the_transition_table_is_the_originals() -> None:
    assert set(TRANSITIONS) == {
        (Status.RUNNING, "initialize"),
        ("initialize", "scanlayer"),
        ("initialize", "summarize"),
        ("scanlayer", "scanlayer"),
        ("scanlayer", "summarize"),
        ("summarize", Status.FINISHED),
    }


# -- Clair answers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("Negligible", 1),
        ("Unknown", 2),
        ("Low", 3),
        ("Medium", 4),
        ("High", 5),
        ("Critical", 5),
        ("Defcon1", 5),
        ("", 2),
        (None, 2),
        ("weird", 2),
    ],
)
def test_clair_severities_map_to_harbors_scale(label: object, expected: int) -> None:
    assert clair_severity(label) == expected


def test_a_clair_layer_answer_gives_components_and_findings() -> None:
    doc = {
        "Layer": {
            "Name": "top",
            "NamespaceName": "debian:9",
            "Features": [
                {
                    "Name": "openssl",
                    "Version": "1.1.0f-3",
                    "VersionFormat": "dpkg",
                    "Vulnerabilities": [
                        {
                            "Name": "CVE-1",
                            "Severity": "High",
                            "FixedBy": "1.1.0f-3+deb9u1",
                            "Link": "L",
                            "Description": "D",
                        }
                    ],
                },
                {"Name": "bash", "Version": "4.4-5", "NamespaceName": "debian:9"},
            ],
        }
    }
    packages, findings = parse_layer(doc)
    assert packages == [
        Package("debian:9", "openssl", "1.1.0f-3"),
        Package("debian:9", "bash", "4.4-5"),
    ]
    assert findings == [
        Finding(
            "CVE-1", "debian:9", "openssl", "1.1.0f-3", "1.1.0f-3+deb9u1", Severity.HIGH, "D", "L"
        )
    ]
    result = image_result(digest(1), findings, packages, "top")
    assert result.components_overview == {
        "total": 2,
        "summary": [{"severity": 5, "count": 1}, {"severity": 1, "count": 1}],
    }


def test_a_clair_answer_without_a_layer_or_with_a_nameless_feature_is_refused() -> None:
    with pytest.raises(ValueError, match="no 'Layer'"):
        parse_layer({"Error": {"Message": "x"}})
    with pytest.raises(ValueError, match=r"Features\[0\]"):
        parse_layer({"Layer": {"Features": [{"Version": "1"}]}})
    assert parse_layer({"Layer": {"Name": "x"}}) == ([], [])


# -- adapter answers -----------------------------------------------------------------


def capability(*produces: str, **extra: Any) -> dict[str, Any]:
    return {"consumes_mime_types": [DOCKER], "produces_mime_types": list(produces), **extra}


def test_adapter_metadata_prefers_the_v11_report_and_ignores_other_capabilities() -> None:
    meta = parse_metadata(
        {
            "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.50"},
            "capabilities": [
                capability("application/spdx+json", type="sbom"),
                capability(
                    MIME_REPORT_V1_0, "application/vnd.security.vulnerability.report;version=1.1"
                ),
            ],
        }
    )
    assert meta.scanner == "Trivy 0.50 (Aqua Security)"
    assert meta.report_type == MIME_REPORT_V1_1
    assert meta.consumes == {mime_key(DOCKER)}
    older = parse_metadata(
        {"scanner": {"name": "Old"}, "capabilities": [capability(MIME_REPORT_V1_0)]}
    )
    assert older.report_type == MIME_REPORT_V1_0


def test_adapter_metadata_without_a_harbor_report_is_refused() -> None:
    with pytest.raises(ValueError, match="no capability produces"):
        parse_metadata({"scanner": {}, "capabilities": [capability("application/vnd.raw")]})
    with pytest.raises(ValueError, match="'capabilities'"):
        parse_metadata({"scanner": {}})


def test_mime_types_compare_without_case_or_blanks() -> None:
    assert mime_key("Application/X; Version = 1.1") == mime_key("application/x;version=1.1")


@pytest.mark.parametrize(
    ("label", "expected"),
    [("Unknown", 2), ("Negligible", 1), ("Low", 3), ("Medium", 4), ("High", 5), ("Critical", 5)],
)
def test_adapter_severities_map_to_harbors_scale(label: str, expected: int) -> None:
    assert adapter_severity(label) == expected


def test_an_adapter_report_gives_findings_and_refuses_items_without_an_id() -> None:
    report = {
        "vulnerabilities": [
            {
                "id": "CVE-2017-8283",
                "package": "dpkg",
                "version": "1.17.27",
                "fix_version": "1.18.0",
                "severity": "Low",
                "description": "dpkg-source ...",
                "links": ["https://security-tracker.debian.org/tracker/CVE-2017-8283"],
            }
        ]
    }
    assert parse_report(report) == [
        Finding(
            "CVE-2017-8283",
            "",
            "dpkg",
            "1.17.27",
            "1.18.0",
            Severity.LOW,
            "dpkg-source ...",
            "https://security-tracker.debian.org/tracker/CVE-2017-8283",
        )
    ]
    assert parse_report({"vulnerabilities": None}) == []
    with pytest.raises(ValueError, match=r"vulnerabilities\[0\]"):
        parse_report({"vulnerabilities": [{"package": "x"}]})


# -- results -------------------------------------------------------------------------


def test_the_overview_json_is_compact_with_total_first_as_go_marshalled_it() -> None:
    text = overview_json({"summary": [{"count": 3, "severity": 5}], "total": 3})
    assert text == '{"total":3,"summary":[{"severity":5,"count":3}]}'
    assert overview_json({"total": 0, "summary": []}) == '{"total":0,"summary":[]}'


def test_an_image_without_packages_has_severity_none() -> None:
    result = image_result(digest(1), [], [], "")
    assert (result.severity, dict(result.components_overview)) == (1, {"total": 0, "summary": []})


def test_an_index_result_combines_children_and_lists_each_finding_once() -> None:
    shared = finding("CVE-1", "openssl", "3.0", Severity.MEDIUM)
    amd = image_result(
        digest(1),
        [shared, finding("CVE-2", "zlib", "1.3", Severity.HIGH)],
        [Package("Debian", "openssl", "3.0"), Package("Debian", "zlib", "1.3")],
        "k1",
    )
    arm = image_result(digest(2), [shared], [Package("Debian", "openssl", "3.0")], "k2")
    top = index_result(digest(3), [amd, arm])
    assert top.components_overview == {
        "total": 3,
        "summary": [{"severity": 5, "count": 1}, {"severity": 4, "count": 2}],
    }
    assert top.severity == 5
    assert top.details_key == ""
    assert [f.id for f in top.findings] == ["CVE-2", "CVE-1"]
    assert severity_counts(top.findings) == {"high": 1, "medium": 1}


def test_a_repeated_finding_is_kept_once_at_its_worst() -> None:
    low = finding("CVE-1", "a", "1", Severity.LOW)
    result = image_result(digest(1), [low, finding("CVE-1", "a", "1", Severity.HIGH)], [], "")
    assert [f.severity for f in result.findings] == [Severity.HIGH]


# -- layer bytes ---------------------------------------------------------------------


def test_a_layer_whose_bytes_do_not_match_its_digest_is_refused() -> None:
    data = b"layer bytes"
    good = Layer("sha256:" + hashlib.sha256(data).hexdigest(), len(data), LAYER)
    blob = VerifiedBlob([data[:4], data[4:]], good, registry="r", repository="x")
    assert b"".join(blob) == data
    blob.finish()
    bad = VerifiedBlob([data], Layer(digest(1), len(data), LAYER), registry="r", repository="x")
    with pytest.raises(Exception, match="content has digest"):
        bad.finish()
    short = VerifiedBlob([data[:3]], good, registry="r", repository="x")
    with pytest.raises(Exception, match="content has digest"):
        short.finish()


# -- the database cache --------------------------------------------------------------


def record(vid: str) -> str:
    return json.dumps(
        {
            "id": vid,
            "affected": [
                {
                    "package": {"ecosystem": "PyPI", "name": "x"},
                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}],
                }
            ],
        }
    )


def test_the_database_cache_loads_once_and_again_when_a_file_changes(tmp_path: Path) -> None:
    cache = VulnDBCache()
    (tmp_path / "a.json").write_text(record("A-1"))
    first, loaded = cache.get(tmp_path)
    assert loaded and len(first) == 1
    again, loaded = cache.get(tmp_path)
    assert again is first and not loaded
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").write_text(record("B-1"))
    newer, loaded = cache.get(tmp_path)
    assert loaded and len(newer) == 2
    stat = (tmp_path / "a.json").stat()
    (tmp_path / "a.json").write_text("{broken")
    os.utime(tmp_path / "a.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(VulnDBError, match=r"a\.json: not JSON"):
        cache.get(tmp_path)
    assert cache.loads == 2


def test_a_missing_database_is_named(tmp_path: Path) -> None:
    with pytest.raises(VulnDBError, match=f"vulnerability database {tmp_path}/nope: no such file"):
        VulnDBCache().get(tmp_path / "nope")


# -- settings ------------------------------------------------------------------------


def test_the_scanner_settings_default_to_builtin_and_check_their_urls(tmp_path: Path) -> None:
    settings = load_settings(key_path=tmp_path / "k")
    assert (settings.scanner, settings.vuln_db_path, settings.scanner_url) == (
        "builtin",
        None,
        None,
    )
    assert load_settings(vuln_db_path="").vuln_db_path is None
    adapter = load_settings(scanner="adapter", scanner_url="http://trivy:8080/")
    assert adapter.scanner_url == "http://trivy:8080"
    with pytest.raises(ConfigError, match="scanner 'adapter' needs scanner_url"):
        load_settings(scanner="adapter")
    with pytest.raises(ConfigError, match="scanner 'clair' needs clair_url"):
        load_settings(scanner="clair")
    with pytest.raises(ConfigError, match="clair_url"):
        load_settings(scanner="clair", clair_url="clair:6060")
    with pytest.raises(ConfigError, match="scanner"):
        load_settings(scanner="anchore")
