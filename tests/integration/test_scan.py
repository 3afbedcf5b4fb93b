"""Scan jobs end to end: real docker-registry, images with real package databases, an OSV
folder written here, and small servers that follow the Harbor scanner adapter and Clair v2
API documents."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import importlib.metadata
import io
import json
import shutil
import subprocess
import sysconfig
import tarfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard
from registries import (
    MEDIA_DOCKER_CONFIG,
    MEDIA_DOCKER_LAYER,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_CONFIG,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    AuthRegistry,
    Blob,
    Image,
    ImageBuilder,
    RegistryServer,
    free_port,
    push_image,
)
from waiting import wait_until

from actors import JobService
from model.db.tables import ImgScanJob, ImgScanOverview, ScanFinding
from model.scan.builtin.osv import Finding
from model.scan.builtin.packages import Package
from model.scan.builtin.severity import Severity
from model.scan.builtin.summary import combine, overview
from model.status import Status

pytestmark = pytest.mark.skipif(
    shutil.which("docker-registry") is None or shutil.which("dpkg-query") is None,
    reason="needs docker-registry and dpkg",
)

MEDIA_OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
SITE = "usr/local/lib/python3.11/site-packages"
JOB_TIMEOUT_S = 60.0
#: Report types of the Harbor scanner adapter API v1.0 and v1.1.
REPORT_V10 = "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0"
REPORT_V11 = "application/vnd.security.vulnerability.report; version=1.1"


# -- layers and images -------------------------------------------------------------


@dataclass
class Files:
    """The entries of one layer: files (path -> bytes), directories, whiteouts."""

    files: dict[str, bytes] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)
    whiteouts: list[str] = field(default_factory=list)

    def tar(self) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in self.dirs:
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            for name, data in [*self.files.items(), *((w, b"") for w in self.whiteouts)]:
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()


def layer(builder: ImageBuilder, files: Files, compression: str = "gzip") -> Blob:
    raw = files.tar()
    if compression == "gzip":
        data = gzip.compress(raw, mtime=0)
    elif compression == "zstd":
        data = zstandard.ZstdCompressor().compress(raw)
    else:
        data = raw
    return replace(builder.blob(data), diff_id="sha256:" + hashlib.sha256(raw).hexdigest())


def image(
    builder: ImageBuilder,
    layers: Sequence[tuple[Blob, str]],
    *,
    oci: bool = False,
    arch: str = "amd64",
) -> Image:
    """An image of ``layers`` ((blob, media type), base first)."""
    config = builder.blob(
        json.dumps(
            {
                "architecture": arch,
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b, _ in layers]},
            }
        ).encode()
    )
    manifest_type = MEDIA_OCI_MANIFEST if oci else MEDIA_DOCKER_MANIFEST
    doc = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {
            "mediaType": MEDIA_OCI_CONFIG if oci else MEDIA_DOCKER_CONFIG,
            "digest": config.digest,
            "size": config.size,
        },
        "layers": [{"mediaType": mt, "digest": b.digest, "size": b.size} for b, mt in layers],
    }
    raw = json.dumps(doc, indent=2).encode()
    return Image(
        manifest_type,
        raw,
        "sha256:" + hashlib.sha256(raw).hexdigest(),
        (config, *(b for b, _ in layers)),
    )


def index(images: Sequence[tuple[Image, str]]) -> Image:
    doc = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": [
            {
                "mediaType": img.media_type,
                "digest": img.digest,
                "size": img.size,
                "platform": {"architecture": arch, "os": "linux"},
            }
            for img, arch in images
        ],
    }
    raw = json.dumps(doc, indent=2).encode()
    return Image(
        MEDIA_OCI_INDEX,
        raw,
        "sha256:" + hashlib.sha256(raw).hexdigest(),
        (),
        tuple(img for img, _ in images),
    )


# -- this machine's packages -------------------------------------------------------


def os_release() -> dict[str, str]:
    values = {}
    for line in Path("/etc/os-release").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value.strip().strip('"')
    return values


@dataclass(frozen=True)
class Dpkg:
    """One installed package as ``dpkg-query`` reports it."""

    name: str
    version: str
    source: str
    source_version: str


def dpkg_installed() -> list[Dpkg]:
    out = subprocess.run(
        [
            "dpkg-query",
            "-W",
            "-f",
            "${db:Status-Status}\t${Package}\t${Version}\t${source:Package}\t${source:Version}\n",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    return [Dpkg(*row[1:]) for row in rows if row[0] == "installed"]


def python_snapshot(folder: Path) -> dict[str, bytes]:
    """Copies the METADATA of every distribution of this virtualenv into ``folder`` (a
    snapshot, so a concurrent install changes neither layer nor expectation); returns
    layer path -> METADATA bytes."""
    site = Path(sysconfig.get_paths()["purelib"])
    files: dict[str, bytes] = {}
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        data = meta.read_bytes()
        (folder / meta.parent.name).mkdir(parents=True)
        (folder / meta.parent.name / "METADATA").write_bytes(data)
        files[f"{SITE}/{meta.parent.name}/METADATA"] = data
    return files


def python_distributions(folder: Path) -> dict[str, str]:
    """name -> version of the distributions under ``folder``, as importlib reads them."""
    return {
        d.metadata["Name"]: d.version for d in importlib.metadata.distributions(path=[str(folder)])
    }


# -- OSV records -------------------------------------------------------------------


def osv(
    vid: str,
    ecosystem: str,
    name: str,
    events: list[dict[str, str]] | None = None,
    *,
    versions: Sequence[str] = (),
    summary: str = "",
    **extra: Any,
) -> dict[str, Any]:
    affected: dict[str, Any] = {"package": {"ecosystem": ecosystem, "name": name}}
    if events is not None:
        affected["ranges"] = [{"type": "ECOSYSTEM", "events": events}]
    if versions:
        affected["versions"] = list(versions)
    for key in ("ecosystem_specific", "database_specific"):
        if key in extra:
            affected[key] = extra.pop(key)
    record = {
        "schema_version": "1.6.0",
        "id": vid,
        "modified": "2024-01-01T00:00:00Z",
        "summary": summary or f"{vid} in {name}\nmore details",
        "affected": [affected],
        **extra,
    }
    return record


@dataclass
class DebianImage:
    """The Debian-like image made of this machine's package databases, and what a scan
    must find in it."""

    image: Image
    layers: list[Blob]
    packages: list[Dpkg]
    python: dict[str, str]
    components: int
    findings: set[tuple[str, str, str, str, int, str, str]]
    summary: list[dict[str, int]]
    layer_packages: tuple[int, ...]  #: packages each layer holds, before merging


@dataclass
class AlpineImage:
    image: Image
    findings: set[tuple[str, str, str, str, int, str, str]]
    summary: list[dict[str, int]]
    components: int


APK_BASE = """\
C:Q1abc=
P:musl
V:1.2.4_git20230717-r4
A:x86_64
o:musl
T:the musl c library

P:busybox
V:1.36.1-r15
A:x86_64
o:busybox
T:Size optimized toolbox

P:libcrypto3
V:3.1.4-r2
o:openssl
T:Crypto library from openssl

P:libssl3
V:3.1.4-r2
o:openssl
T:SSL shared libraries

P:zlib
V:1.3.1-r0
o:zlib
"""


def osv_link(vid: str) -> str:
    return f"https://osv.dev/vulnerability/{vid}"


@pytest.fixture
def world(tmp_path: Path, images: ImageBuilder) -> tuple[DebianImage, AlpineImage, Path]:
    """Both test images and the OSV folder whose records some of their packages match."""
    release = os_release()
    family = "Ubuntu" if release.get("ID") == "ubuntu" else "Debian"
    version_id = release.get("VERSION_ID", "")
    ecosystem = f"{family}:{version_id}" if version_id else family
    packages = dpkg_installed()
    sources = {p.source: p.source_version for p in packages}
    picks = [s for s in ("dpkg", "coreutils", "tar", "bash") if s in sources]
    assert len(picks) == 4, f"this machine lacks some of dpkg, coreutils, tar, bash: {picks}"

    snapshot = tmp_path / "site-packages"
    meta = python_snapshot(snapshot)
    python = python_distributions(snapshot)
    victim = next(p for p in meta if "/bcrypt-" in p).split("/")[-2]  # bcrypt-X.dist-info
    del python["bcrypt"]
    python["legacy-tool"] = "0.9"
    httpx_version = python["httpx"]

    osv_dir = tmp_path / "osv"
    records = [
        osv(
            "DEBIAN-TEST-0001",
            ecosystem,
            "dpkg",
            [{"introduced": "0"}, {"fixed": sources["dpkg"] + "+fix1"}],
            ecosystem_specific={"urgency": "high"},
        ),
        osv(
            "DEBIAN-TEST-0002",
            ecosystem,
            "bash",
            [{"introduced": "0"}, {"fixed": "0.1-1"}],
            ecosystem_specific={"urgency": "high"},
        ),
        osv(
            "DEBIAN-TEST-0003",
            ecosystem,
            "coreutils",
            [{"introduced": "0"}, {"last_affected": sources["coreutils"]}],
            severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N"}],
            references=[{"type": "WEB", "url": "https://security-tracker.debian.org/x"}],
        ),
        osv("DEBIAN-TEST-0004", f"{family}:99", "tar", [{"introduced": "0"}]),
        osv("DEBIAN-TEST-0005", family, "tar", versions=[sources["tar"]]),
        osv(
            "GHSA-test-0001",
            "PyPI",
            "HTTPX",
            [{"introduced": "0"}, {"fixed": "999.0"}],
            database_specific={"severity": "MODERATE"},
        ),
        osv(
            "GHSA-test-0002",
            "PyPI",
            "bcrypt",
            [{"introduced": "0"}, {"fixed": "999.0"}],
            database_specific={"severity": "CRITICAL"},
        ),
        osv("GHSA-test-0003", "PyPI", "packaging", [{"introduced": "0"}], withdrawn="2024-01-02"),
        osv("GHSA-test-0004", "PyPI", "pydantic", [{"introduced": "999"}]),
        osv(
            "ALPINE-TEST-0001",
            "Alpine:v3.19",
            "openssl",
            [{"introduced": "0"}, {"fixed": "3.1.4-r5"}],
            database_specific={"severity": "HIGH"},
        ),
        osv(
            "ALPINE-TEST-0002",
            "Alpine:v3.19",
            "busybox",
            [{"introduced": "0"}, {"fixed": "1.36.1-r16"}],
            database_specific={"severity": "LOW"},
        ),
        osv(
            "PYSEC-TEST-0001",
            "PyPI",
            "urllib3",
            [{"introduced": "0"}, {"fixed": "1.26.18"}],
            severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
        ),
    ]
    for record in records:
        family_dir = osv_dir / record["affected"][0]["package"]["ecosystem"].split(":")[0]
        family_dir.mkdir(parents=True, exist_ok=True)
        (family_dir / f"{record['id']}.json").write_text(json.dumps(record))

    # Debian: system databases, then Python metadata, then a layer that removes one
    # distribution (whiteout) and adds a legacy egg-info.
    base = layer(
        images,
        Files(
            files={
                "etc/os-release": Path("/etc/os-release").read_bytes(),
                "var/lib/dpkg/status": Path("/var/lib/dpkg/status").read_bytes(),
                "usr/bin/hello": b"\x7fELF" + bytes(4000),
            },
            dirs=["etc", "var/lib/dpkg", "usr/bin"],
        ),
    )
    pythons = layer(images, Files(files=meta, dirs=[SITE]))
    patch = layer(
        images,
        Files(
            files={
                f"{SITE}/legacy_tool-0.9-py3.11.egg-info/PKG-INFO": b"Name: legacy-tool\n"
                b"Version: 0.9\n\nA tool from before wheels.\n"
            },
            whiteouts=[f"{SITE}/.wh.{victim}"],
        ),
    )
    deb_layers = [base, pythons, patch]
    deb = image(images, [(b, MEDIA_DOCKER_LAYER) for b in deb_layers])
    v = sources
    deb_findings = {
        (
            "DEBIAN-TEST-0001",
            "dpkg",
            v["dpkg"],
            v["dpkg"] + "+fix1",
            5,
            "DEBIAN-TEST-0001 in dpkg",
            osv_link("DEBIAN-TEST-0001"),
        ),
        (
            "DEBIAN-TEST-0003",
            "coreutils",
            v["coreutils"],
            "",
            4,
            "DEBIAN-TEST-0003 in coreutils",
            "https://security-tracker.debian.org/x",
        ),
        (
            "DEBIAN-TEST-0005",
            "tar",
            v["tar"],
            "",
            2,
            "DEBIAN-TEST-0005 in tar",
            osv_link("DEBIAN-TEST-0005"),
        ),
        (
            "GHSA-test-0001",
            "httpx",
            httpx_version,
            "999.0",
            4,
            "GHSA-test-0001 in HTTPX",
            osv_link("GHSA-test-0001"),
        ),
    }
    deb_components = len({(p.source, p.source_version) for p in packages}) + len(python)
    deb_summary = [
        {"severity": 5, "count": 1},
        {"severity": 4, "count": 2},
        {"severity": 2, "count": 1},
        {"severity": 1, "count": deb_components - 4},
    ]

    # Alpine: an apk database, then a zstd layer that upgrades openssl (fixing one
    # vulnerability) and adds a Python distribution.
    alpine_release = b'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.1\n'
    upgraded = APK_BASE.replace("V:3.1.4-r2", "V:3.1.4-r5")
    a1 = layer(
        images,
        Files(files={"etc/os-release": alpine_release, "lib/apk/db/installed": APK_BASE.encode()}),
    )
    a2 = layer(
        images,
        Files(
            files={
                "lib/apk/db/installed": upgraded.encode(),
                "usr/lib/python3.11/site-packages/urllib3-1.26.5.dist-info/METADATA": (
                    b"Metadata-Version: 2.1\nName: urllib3\nVersion: 1.26.5\n\nHTTP library\n"
                ),
            }
        ),
        "zstd",
    )
    alp = image(images, [(a1, MEDIA_OCI_GZIP), (a2, MEDIA_OCI_ZSTD)], oci=True, arch="arm64")
    alpine = AlpineImage(
        alp,
        {
            (
                "PYSEC-TEST-0001",
                "urllib3",
                "1.26.5",
                "1.26.18",
                5,
                "PYSEC-TEST-0001 in urllib3",
                osv_link("PYSEC-TEST-0001"),
            ),
            (
                "ALPINE-TEST-0002",
                "busybox",
                "1.36.1-r15",
                "1.36.1-r16",
                3,
                "ALPINE-TEST-0002 in busybox",
                osv_link("ALPINE-TEST-0002"),
            ),
        },
        [
            {"severity": 5, "count": 1},
            {"severity": 3, "count": 1},
            {"severity": 1, "count": 3},
        ],
        5,  # musl, busybox, openssl (libcrypto3 + libssl3), zlib, urllib3
    )
    debian = DebianImage(
        deb,
        deb_layers,
        packages,
        python,
        deb_components,
        deb_findings,
        deb_summary,
        (len(packages), len(meta), 1),
    )
    return debian, alpine, osv_dir


def overview_row(service: JobService, digest: str) -> ImgScanOverview:
    (row,) = service.store.list_rows(ImgScanOverview, image_digest=digest)
    return row


def finding_rows(service: JobService, digest: str) -> set[tuple[str, str, str, str, int, str, str]]:
    return {
        (
            f.vulnerability_id,
            f.package,
            f.version,
            f.fixed_version,
            f.severity,
            f.description,
            f.link,
        )
        for f in service.store.list_rows(ScanFinding, image_digest=digest)
    }


def chain_names(digests: Sequence[str]) -> list[str]:
    """Harbor 1.4's ``prepareLayers``: sha256 of "d1-d2-…-di-" per layer."""
    chain, names = "", []
    for digest in digests:
        chain += digest + "-"
        names.append(hashlib.sha256(chain.encode()).hexdigest())
    return names


def job_log(service: JobService, job_id: int) -> str:
    return Path(service.log_path("scan", job_id)).read_text()


# -- builtin ------------------------------------------------------------------------


def test_builtin_scan_finds_this_machines_packages_and_their_vulnerabilities(
    registry: RegistryServer,
    images: ImageBuilder,
    world: tuple[DebianImage, AlpineImage, Path],
    make_service: Callable[..., JobService],
) -> None:
    debian, _alpine, osv_dir = world
    push_image(images, debian.image, registry.host, "library/debian", "12")
    service = make_service(registry_url=registry.url, vuln_db_path=osv_dir)

    job_id = service.scan("library/debian", "12")
    assert service.wait("scan", job_id, JOB_TIMEOUT_S) == Status.FINISHED, job_log(service, job_id)

    assert service.store.get(ImgScanJob, job_id).digest == debian.image.digest
    row = overview_row(service, debian.image.digest)
    assert row.scan_job_id == job_id
    assert row.severity == 5
    expected = {"total": debian.components, "summary": debian.summary}
    assert row.components_overview == json.dumps(expected, separators=(",", ":"))
    assert row.details_key == chain_names([b.digest for b in debian.layers])[-1]
    assert finding_rows(service, debian.image.digest) == debian.findings

    log = job_log(service, job_id)
    dpkg_count = len(debian.packages)
    python_count = len(debian.python)
    for n, (blob, found) in enumerate(zip(debian.layers, debian.layer_packages, strict=True), 1):
        assert f"layer {n}/3 {blob.digest}: {blob.size} bytes gzip (" in log
        assert f"MB), {found} packages in" in log.split(blob.digest + ":", 1)[1].split("\n")[0]
    assert f"{dpkg_count + python_count} packages, {debian.components} components, 4 findings" in (
        log
    )
    assert "state summarize" in log and "state finished" in log


def test_the_packages_found_equal_dpkg_query_and_importlib_on_this_machine(
    world: tuple[DebianImage, AlpineImage, Path],
) -> None:
    from model.scan.builtin.packages import merge_layers, scan_layer

    debian, _alpine, _osv = world
    scans = []
    for blob in debian.layers:
        with blob.path.open("rb") as data:
            scans.append(scan_layer(data, blob.digest))
    found = merge_layers(scans)
    dpkg = {
        (p.name, p.version, p.match_name, p.match_version)
        for p in found
        if p.ecosystem in ("Debian", "Ubuntu")
    }
    assert dpkg == {(p.name, p.version, p.source, p.source_version) for p in debian.packages}
    assert {p.name: p.version for p in found if p.ecosystem == "PyPI"} == debian.python


def test_an_index_is_scanned_per_child_and_its_overview_combines_its_children(
    registry: RegistryServer,
    images: ImageBuilder,
    world: tuple[DebianImage, AlpineImage, Path],
    make_service: Callable[..., JobService],
) -> None:
    debian, alpine, osv_dir = world
    multi = index([(debian.image, "amd64"), (alpine.image, "arm64")])
    push_image(images, multi, registry.host, "library/multi", "v1")
    service = make_service(registry_url=registry.url, vuln_db_path=osv_dir)

    job_id = service.scan("library/multi", "v1")
    assert service.wait("scan", job_id, JOB_TIMEOUT_S) == Status.FINISHED, job_log(service, job_id)

    deb_view = {"total": debian.components, "summary": debian.summary}
    alp_view = {"total": alpine.components, "summary": alpine.summary}
    for digest, view, findings in (
        (debian.image.digest, deb_view, debian.findings),
        (alpine.image.digest, alp_view, alpine.findings),
    ):
        row = overview_row(service, digest)
        assert json.loads(row.components_overview) == view
        assert row.severity == 5
        assert finding_rows(service, digest) == findings

    top = overview_row(service, multi.digest)
    assert top.scan_job_id == job_id
    assert top.severity == 5
    assert top.details_key == ""
    assert top.components_overview == json.dumps(
        {
            "total": debian.components + alpine.components,
            "summary": [
                {"severity": 5, "count": 2},
                {"severity": 4, "count": 2},
                {"severity": 3, "count": 1},
                {"severity": 2, "count": 1},
                {"severity": 1, "count": debian.components - 4 + 3},
            ],
        },
        separators=(",", ":"),
    )
    assert json.loads(top.components_overview) == combine([deb_view, alp_view])
    assert finding_rows(service, multi.digest) == debian.findings | alpine.findings
    assert "zstd" in job_log(service, job_id)


# -- failures -----------------------------------------------------------------------


def test_a_missing_image_ends_in_error_naming_it(
    registry: RegistryServer, make_service: Callable[..., JobService]
) -> None:
    service = make_service(registry_url=registry.url)
    job_id = service.scan("library/ghost", "latest")
    assert service.wait("scan", job_id, JOB_TIMEOUT_S) == Status.ERROR
    assert f"image library/ghost:latest not found in registry {registry.url}" in job_log(
        service, job_id
    )
    assert service.store.list_rows(ImgScanOverview) == []


def test_a_layer_that_is_not_a_tar_ends_in_error_naming_the_layer(
    registry: RegistryServer, images: ImageBuilder, make_service: Callable[..., JobService]
) -> None:
    good = layer(images, Files(files={"etc/hostname": b"box\n"}))
    junk = images.blob(b"this is no tar archive, only text\n" * 64)
    bad = image(images, [(good, MEDIA_DOCKER_LAYER), (junk, MEDIA_DOCKER_LAYER)])
    push_image(images, bad, registry.host, "library/junk", "v1")
    service = make_service(registry_url=registry.url)

    job_id = service.scan("library/junk", "v1")
    assert service.wait("scan", job_id, JOB_TIMEOUT_S) == Status.ERROR
    log = job_log(service, job_id)
    assert f"layer {junk.digest}: not a tar archive" in log
    assert "state scanlayer failed" in log


def test_an_unreadable_vulnerability_database_ends_in_error_naming_it(
    registry: RegistryServer,
    images: ImageBuilder,
    tmp_path: Path,
    make_service: Callable[..., JobService],
) -> None:
    push_image(images, images.docker_image((512,)), registry.host, "library/app", "v1")
    broken = tmp_path / "broken-osv"
    broken.mkdir()
    (broken / "CVE-1.json").write_text("{not json")
    service = make_service(registry_url=registry.url, vuln_db_path=broken)

    job_id = service.scan("library/app", "v1")
    assert service.wait("scan", job_id, JOB_TIMEOUT_S) == Status.ERROR
    log = job_log(service, job_id)
    assert f"vulnerability database {broken}: CVE-1.json: not JSON" in log
    assert "state scanlayer" not in log  # failed before pulling anything


def test_an_unreachable_registry_sends_the_scan_to_retrying_until_it_is_back(
    registry: RegistryServer, images: ImageBuilder, make_service: Callable[..., JobService]
) -> None:
    app = images.docker_image((2048,))
    push_image(images, app, registry.host, "library/app", "v1")
    service = make_service(
        registry_url=registry.url, retry_delay=0.3, retry_delay_max=0.6, max_retries=100
    )
    registry.stop()
    job_id = service.scan("library/app", "v1")
    wait_until(lambda: service.store.get(ImgScanJob, job_id).attempts >= 1)
    assert service.status("scan", job_id) in (Status.RETRYING, Status.RUNNING)

    registry.start()
    assert service.wait("scan", job_id, JOB_TIMEOUT_S) == Status.FINISHED
    assert overview_row(service, app.digest).components_overview == '{"total":0,"summary":[]}'
    log = job_log(service, job_id)
    assert "failed, will retry: check manifest library/app:v1" in log
    assert "ConnectError" in log


# -- scanner servers ----------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)


class FakeServer:
    """An HTTP server in a thread; ``route(seen) -> (status, headers, body)``."""

    def __init__(self, route: Callable[[Seen], tuple[int, dict[str, str], Any]]) -> None:
        self.route = route
        self.seen: list[Seen] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                seen = Seen(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    json.loads(raw) if raw else None,
                )
                server.seen.append(seen)
                try:
                    status, headers, body = server.route(seen)
                except Exception as exc:  # the test's assertion, as a 500 the job logs
                    status, headers, body = 500, {}, {"error": {"message": repr(exc)}}
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def auth_registry(htpasswd_registry: AuthRegistry) -> AuthRegistry:
    return htpasswd_registry


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


ADAPTER_REPORT = {
    "generated_at": "2024-01-01T00:00:00Z",
    "scanner": {"name": "Fake", "vendor": "tests", "version": "1.1"},
    "severity": "Critical",
    "vulnerabilities": [
        {
            "id": "CVE-2017-8283",
            "package": "dpkg",
            "version": "1.17.27",
            "fix_version": "1.18.0",
            "severity": "Low",
            "description": "dpkg-source in dpkg 1.3.0 through 1.18.23 ...",
            "links": ["https://security-tracker.debian.org/tracker/CVE-2017-8283"],
            "preferred_cvss": {"score_v3": 9.8, "vector_v3": "CVSS:3.0/AV:N/AC:L/PR:N/UI:N"},
            "cwe_ids": ["CWE-20"],
        },
        {
            "id": "CVE-2023-0001",
            "package": "dpkg",
            "version": "1.17.27",
            "severity": "Critical",
            "description": "worse",
            "links": [],
        },
        {"id": "CVE-2023-0002", "package": "openssl", "version": "1.1.1", "severity": "Medium"},
        {"id": "CVE-2023-0003", "package": "zlib", "version": "1.2", "severity": "Unknown"},
        {"id": "CVE-2023-0004", "package": "tzdata", "version": "2023c", "severity": "Negligible"},
    ],
}


def test_the_adapter_backend_follows_the_pluggable_scanner_api_and_stores_the_same_overview(
    auth_registry: AuthRegistry, images: ImageBuilder, make_service: Callable[..., JobService]
) -> None:
    app = images.docker_image((1024, 2048))
    push_image(
        images, app, auth_registry.server.host, "library/app", "v2", creds=auth_registry.creds
    )
    scans: dict[str, int] = {}
    pulled: list[int] = []

    def route(seen: Seen) -> tuple[int, dict[str, str], Any]:
        if seen.method == "GET" and seen.path == "/api/v1/metadata":
            return (
                200,
                {"Content-Type": "application/vnd.scanner.adapter.metadata+json; version=1.0"},
                {
                    "scanner": {"name": "Fake", "vendor": "tests", "version": "1.1"},
                    "capabilities": [
                        {
                            "consumes_mime_types": [MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST],
                            "produces_mime_types": [
                                REPORT_V10,
                                REPORT_V11,
                            ],
                        }
                    ],
                    "properties": {
                        "harbor.scanner-adapter/scanner-type": "os-package-vulnerability"
                    },
                },
            )
        if seen.method == "POST" and seen.path == "/api/v1/scan":
            # as a real adapter does: pull the manifest with the authorization given
            registry, artifact = seen.body["registry"], seen.body["artifact"]
            pulled.append(
                httpx.get(
                    f"{registry['url']}/v2/{artifact['repository']}/manifests/{artifact['digest']}",
                    headers={
                        "Authorization": registry["authorization"],
                        "Accept": artifact["mime_type"],
                    },
                ).status_code
            )
            scan_id = str(uuid.uuid4())
            scans[scan_id] = 0
            return 202, {}, {"id": scan_id}
        if seen.method == "GET" and seen.path.startswith("/api/v1/scan/"):
            scan_id = seen.path.split("/")[4]
            if scan_id not in scans:
                return 404, {}, {"error": {"message": "unknown"}}
            scans[scan_id] += 1
            if scans[scan_id] == 1:
                return 302, {"Refresh-After": "1"}, b""
            return (
                200,
                {"Content-Type": REPORT_V11},
                ADAPTER_REPORT,
            )
        return 404, {}, {"error": {"message": "no route"}}

    with FakeServer(route) as adapter:
        service = make_service(
            registry_url=auth_registry.url,
            registry_username=auth_registry.username,
            registry_password=auth_registry.password,
            scanner="adapter",
            scanner_url=adapter.url,
        )
        job_id = service.scan("library/app", "v2")
        status = service.wait("scan", job_id, JOB_TIMEOUT_S)
    assert status == Status.FINISHED, job_log(service, job_id)

    metadata, post, first, second = adapter.seen
    assert (metadata.method, metadata.path) == ("GET", "/api/v1/metadata")
    assert (post.method, post.path) == ("POST", "/api/v1/scan")
    assert post.headers["content-type"] == (
        "application/vnd.scanner.adapter.scan.request+json; version=1.0"
    )
    assert post.body == {
        "registry": {
            "url": auth_registry.url,
            "authorization": basic(auth_registry.username, auth_registry.password),
        },
        "artifact": {
            "repository": "library/app",
            "digest": app.digest,
            "tag": "v2",
            "mime_type": MEDIA_DOCKER_MANIFEST,
        },
    }
    assert pulled == [200]
    (scan_id,) = scans
    for poll in (first, second):
        assert (poll.method, poll.path) == ("GET", f"/api/v1/scan/{scan_id}/report")
        assert poll.headers["accept"] == REPORT_V11
    assert second.at - first.at >= 0.9  # the poll waited for Refresh-After: 1

    findings = [
        Finding(
            v["id"],
            "",
            v["package"],
            v["version"],
            v.get("fix_version", ""),
            {
                "Low": Severity.LOW,
                "Critical": Severity.HIGH,
                "Medium": Severity.MEDIUM,
                "Unknown": Severity.UNKNOWN,
                "Negligible": Severity.NONE,
            }[v["severity"]],
            v.get("description", ""),
            (v.get("links") or [""])[0],
        )
        for v in ADAPTER_REPORT["vulnerabilities"]  # type: ignore[union-attr]
    ]
    row = overview_row(service, app.digest)
    assert json.loads(row.components_overview) == overview(findings, [])
    assert row.components_overview == (
        '{"total":4,"summary":[{"severity":5,"count":1},{"severity":4,"count":1},'
        '{"severity":2,"count":1},{"severity":1,"count":1}]}'
    )
    assert row.severity == 5
    assert row.details_key == scan_id
    assert finding_rows(service, app.digest) == {
        (f.id, f.package, f.version, f.fixed_version, int(f.severity), f.description, f.link)
        for f in findings
    }
    assert auth_registry.password not in job_log(service, job_id)


def test_a_stop_lands_while_the_adapter_is_still_scanning(
    registry: RegistryServer, images: ImageBuilder, make_service: Callable[..., JobService]
) -> None:
    push_image(images, images.docker_image((512,)), registry.host, "library/app", "v1")
    polls = threading.Event()

    def route(seen: Seen) -> tuple[int, dict[str, str], Any]:
        if seen.path == "/api/v1/metadata":
            return (
                200,
                {},
                {
                    "scanner": {"name": "Slow"},
                    "capabilities": [
                        {
                            "consumes_mime_types": [MEDIA_DOCKER_MANIFEST],
                            "produces_mime_types": [REPORT_V10],
                        }
                    ],
                },
            )
        if seen.path == "/api/v1/scan":
            return 202, {}, {"id": "forever"}
        polls.set()
        assert seen.headers["accept"] == (REPORT_V10)
        return 302, {"Refresh-After": "30"}, b""

    with FakeServer(route) as adapter:
        service = make_service(
            registry_url=registry.url, scanner="adapter", scanner_url=adapter.url
        )
        job_id = service.scan("library/app", "v1")
        assert polls.wait(JOB_TIMEOUT_S)
        service.stop("scan", job_id)
        assert service.wait("scan", job_id, 10) == Status.STOPPED
    assert service.store.list_rows(ImgScanOverview) == []


CLAIR_FEATURES = [
    {
        "Name": "coreutils",
        "NamespaceName": "debian:8",
        "VersionFormat": "dpkg",
        "Version": "8.23-4",
        "Vulnerabilities": [
            {
                "Name": "CVE-2014-9471",
                "NamespaceName": "debian:8",
                "Description": "The parse_datetime function in GNU coreutils ...",
                "Link": "https://security-tracker.debian.org/tracker/CVE-2014-9471",
                "Severity": "Low",
                "FixedBy": "9.23-5",
            },
            {"Name": "CVE-2015-4042", "NamespaceName": "debian:8", "Severity": "Critical"},
        ],
        "AddedBy": "x",
    },
    {
        "Name": "openssl",
        "NamespaceName": "debian:8",
        "VersionFormat": "dpkg",
        "Version": "1.0.1t-1+deb8u6",
        "Vulnerabilities": [
            {"Name": "CVE-2017-3735", "Severity": "Medium", "FixedBy": "1.0.1t-1+deb8u7"},
            {"Name": "CVE-2010-0928", "Severity": "Negligible"},
        ],
    },
    {"Name": "bash", "NamespaceName": "debian:8", "VersionFormat": "dpkg", "Version": "4.3-11"},
    {
        "Name": "zlib",
        "NamespaceName": "debian:8",
        "VersionFormat": "dpkg",
        "Version": "1:1.2.8",
        "Vulnerabilities": [{"Name": "CVE-2016-9840", "Severity": "Defcon1"}],
    },
    {
        "Name": "glibc",
        "NamespaceName": "debian:8",
        "VersionFormat": "dpkg",
        "Version": "2.19-18",
        "Vulnerabilities": [{"Name": "CVE-2016-1234", "Severity": "Unknown"}],
    },
]


def test_the_clair_backend_posts_layers_base_first_with_chained_parents_and_registry_auth(
    auth_registry: AuthRegistry, images: ImageBuilder, make_service: Callable[..., JobService]
) -> None:
    app = images.docker_image((1024, 2048, 4096))
    push_image(
        images, app, auth_registry.server.host, "library/app", "v3", creds=auth_registry.creds
    )
    known: set[str] = set()

    def route(seen: Seen) -> tuple[int, dict[str, str], Any]:
        if seen.method == "GET" and seen.path == "/v1/namespaces":
            return 200, {}, {"Namespaces": [{"Name": "debian:8", "VersionFormat": "dpkg"}]}
        if seen.method == "POST" and seen.path == "/v1/layers":
            layer = seen.body["Layer"]
            if layer.get("ParentName") and layer["ParentName"] not in known:
                return 422, {}, {"Error": {"Message": "parent layer is unknown"}}
            blob = httpx.get(layer["Path"], headers=layer.get("Headers") or {})  # as Clair does
            if blob.status_code != 200:
                return 422, {}, {"Error": {"Message": f"could not download: {blob.status_code}"}}
            if "sha256:" + hashlib.sha256(blob.content).hexdigest() != layer["Path"].split("/")[-1]:
                return 422, {}, {"Error": {"Message": "digest mismatch"}}
            known.add(layer["Name"])
            return 201, {}, {"Layer": {**layer, "IndexedByVersion": 3}}
        url = urllib.parse.urlsplit(seen.path)
        if seen.method == "GET" and url.path.startswith("/v1/layers/"):
            name = url.path.rsplit("/", 1)[1]
            if name not in known:
                return 404, {}, {"Error": {"Message": "the resource cannot be found"}}
            assert set(urllib.parse.parse_qs(url.query, keep_blank_values=True)) == {
                "features",
                "vulnerabilities",
            }
            return (
                200,
                {},
                {
                    "Layer": {
                        "Name": name,
                        "NamespaceName": "debian:8",
                        "IndexedByVersion": 3,
                        "Features": CLAIR_FEATURES,
                    }
                },
            )
        return 404, {}, {"Error": {"Message": "no route"}}

    with FakeServer(route) as clair:
        service = make_service(
            registry_url=auth_registry.url,
            registry_username=auth_registry.username,
            registry_password=auth_registry.password,
            scanner="clair",
            clair_url=clair.url,
        )
        job_id = service.scan("library/app", "v3")
        status = service.wait("scan", job_id, JOB_TIMEOUT_S)
    assert status == Status.FINISHED, job_log(service, job_id)

    digests = [b.digest for b in app.blobs[1:]]
    names = chain_names(digests)
    namespaces, *posts, result = clair.seen
    assert (namespaces.method, namespaces.path) == ("GET", "/v1/namespaces")
    assert [p.body for p in posts] == [
        {
            "Layer": {
                "Name": names[i],
                "Path": f"{auth_registry.url}/v2/library/app/blobs/{digests[i]}",
                "Headers": {"Authorization": basic(auth_registry.username, auth_registry.password)},
                "Format": "Docker",
                **({"ParentName": names[i - 1]} if i else {}),
            }
        }
        for i in range(3)
    ]
    assert all(p.headers["content-type"] == "application/json" for p in posts)
    assert (result.method, result.path) == (
        "GET",
        f"/v1/layers/{names[-1]}?features&vulnerabilities",
    )

    sev = {"Low": 3, "Critical": 5, "Medium": 4, "Negligible": 1, "Defcon1": 5, "Unknown": 2}
    packages = [Package("debian:8", f["Name"], f["Version"]) for f in CLAIR_FEATURES]
    findings = [
        Finding(
            v["Name"],
            "debian:8",
            f["Name"],
            f["Version"],
            v.get("FixedBy", ""),
            Severity(sev[v["Severity"]]),
            v.get("Description", ""),
            v.get("Link", ""),
        )
        for f in CLAIR_FEATURES
        for v in f.get("Vulnerabilities", [])  # type: ignore[attr-defined]
    ]
    row = overview_row(service, app.digest)
    assert json.loads(row.components_overview) == overview(findings, packages)
    assert row.components_overview == (
        '{"total":5,"summary":[{"severity":5,"count":2},{"severity":4,"count":1},'
        '{"severity":2,"count":1},{"severity":1,"count":1}]}'
    )
    assert (row.severity, row.details_key) == (5, names[-1])
    assert len(finding_rows(service, app.digest)) == 6
    assert auth_registry.password not in job_log(service, job_id)


def test_an_unreachable_scanner_sends_the_scan_to_retrying(
    registry: RegistryServer, images: ImageBuilder, make_service: Callable[..., JobService]
) -> None:
    push_image(images, images.docker_image((512,)), registry.host, "library/app", "v1")
    service = make_service(
        registry_url=registry.url,
        scanner="clair",
        clair_url=f"http://127.0.0.1:{free_port()}",
        retry_delay=60,
        retry_delay_max=60,
    )
    job_id = service.scan("library/app", "v1")
    wait_until(lambda: service.status("scan", job_id) == Status.RETRYING)
    assert "clair at http://127.0.0.1:" in job_log(service, job_id)
