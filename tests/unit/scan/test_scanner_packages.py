from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from model.scan.builtin.errors import LayerError
from model.scan.builtin.packages import LayerScan, Package, merge_layers, os_release, scan_layer

# An entry: (path, content) for a file, (path, None) for a directory,
# (path, "->target") for a symlink.
Entry = tuple[str, bytes | str | None]


def tar_bytes(entries: list[Entry], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(content, str):
                info.type = tarfile.SYMTYPE
                info.linkname = content.removeprefix("->")
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def compress(raw: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(raw)
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(raw)
    return raw


def scan(entries: list[Entry], how: str = "none", name: str = "layer") -> LayerScan:
    return scan_layer(io.BytesIO(compress(tar_bytes(entries), how)), name)


DPKG_STATUS_1 = b"""\
Package: libfoo1
Status: install ok installed
Priority: optional
Architecture: amd64
Source: foo (1.0-1)
Version: 1.0-1+b1
Description: foo library
 A library.

Package: oldpkg
Status: deinstall ok config-files
Architecture: amd64
Version: 0.5-1
Description: removed, config files left

Package: gone
Status: purge ok not-installed
Architecture: amd64
Version: 0.1-1

Package: heldpkg
Status: hold ok installed
Architecture: all
Source: heldsrc
Version: 2.0-3
"""

DPKG_STATUS_2 = b"""\
Package: libfoo1
Status: install ok installed
Source: foo (1.0-2)
Version: 1.0-2+b1

Package: newpkg
Status: install ok installed
Version: 3.1-1
"""

APK_INSTALLED = b"""\
C:Q1abc=
P:musl
V:1.2.4_git20230717-r4
A:x86_64
o:musl
T:the musl c library

C:Q1def=
P:busybox-binsh
V:1.36.1-r15
o:busybox
"""


def metadata(name: str, version: str) -> bytes:
    return (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: x\n\n"
        f"Name: not-this\nVersion: 0\n"
    ).encode()


def names(packages: list[Package]) -> set[tuple[str, str, str]]:
    return {(p.ecosystem, p.name, p.version) for p in packages}


# -- one layer -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["none", "gzip", "zstd"])
def test_a_layer_yields_installed_packages_whiteouts_and_opaque_dirs(how: str) -> None:
    result = scan(
        [
            ("./var/lib/dpkg", None),
            ("./var/lib/dpkg/status", DPKG_STATUS_1),
            ("lib/apk/db/installed", APK_INSTALLED),
            (
                "usr/lib/python3/site-packages/six-1.16.0.dist-info/METADATA",
                metadata("six", "1.16.0"),
            ),
            ("srv/old-1.0-py3.11.egg-info", metadata("old", "1.0")),
            ("srv/pkg/legacy-0.1.egg-info/PKG-INFO", metadata("Legacy", "0.1")),
            ("srv/pkg/big.bin", os.urandom(300_000)),
            ("etc/.wh.passwd", b""),
            ("opt/app/.wh..wh..opq", b""),
            ("opt/.wh..wh.plnk", b""),  # aufs metadata, not a whiteout
        ],
        how,
    )
    assert result.compression == how
    assert result.whiteouts == {"etc/passwd"}
    assert result.opaque_dirs == {"opt/app"}
    status = result.files["var/lib/dpkg/status"]
    assert [(p.name, p.version, p.source_name, p.source_version) for p in status] == [
        ("libfoo1", "1.0-1+b1", "foo", "1.0-1"),
        ("heldpkg", "2.0-3", "heldsrc", "2.0-3"),
    ]
    apk = result.files["lib/apk/db/installed"]
    assert [(p.ecosystem, p.name, p.version, p.source_name) for p in apk] == [
        ("Alpine", "musl", "1.2.4_git20230717-r4", "musl"),
        ("Alpine", "busybox-binsh", "1.36.1-r15", "busybox"),
    ]
    python = {
        p.path: (p.name, p.version)
        for v in result.files.values()
        for p in v
        if p.ecosystem == "PyPI"
    }
    assert python == {
        "usr/lib/python3/site-packages/six-1.16.0.dist-info/METADATA": ("six", "1.16.0"),
        "srv/old-1.0-py3.11.egg-info": ("old", "1.0"),
        "srv/pkg/legacy-0.1.egg-info/PKG-INFO": ("Legacy", "0.1"),
    }


def test_status_d_entries_are_read_and_md5sums_skipped() -> None:
    result = scan(
        [
            ("var/lib/dpkg/status.d/base", b"Package: base-files\nVersion: 12.4\n"),
            ("var/lib/dpkg/status.d/base.md5sums", b"abc  etc/debian_version\n"),
            ("var/lib/dpkg/status.d/tzdata", b"Package: tzdata\nVersion: 2024a-0+deb12u1\n"),
        ]
    )
    assert set(result.files) == {"var/lib/dpkg/status.d/base", "var/lib/dpkg/status.d/tzdata"}
    assert names(merge_layers([result])) == {
        ("Debian", "base-files", "12.4"),
        ("Debian", "tzdata", "2024a-0+deb12u1"),
    }


def test_a_hard_link_to_a_database_of_the_same_layer_carries_its_packages() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("var/lib/dpkg/status")
        info.size = len(DPKG_STATUS_2)
        tar.addfile(info, io.BytesIO(DPKG_STATUS_2))
        link = tarfile.TarInfo("var/lib/dpkg/status.d/copy")
        link.type = tarfile.LNKTYPE
        link.linkname = "var/lib/dpkg/status"
        tar.addfile(link)
    result = scan_layer(io.BytesIO(buf.getvalue()), "hardlink")
    copied = result.files["var/lib/dpkg/status.d/copy"]
    assert [(p.name, p.path) for p in copied] == [
        ("libfoo1", "var/lib/dpkg/status.d/copy"),
        ("newpkg", "var/lib/dpkg/status.d/copy"),
    ]


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_member_names_are_followed(fmt: int) -> None:
    deep = "usr/lib/python3/" + "x" * 150 + "/pkg_name-1.0.dist-info/METADATA"
    raw = tar_bytes([(deep, metadata("pkg_name", "1.0")), ("a" * 120, b"data")], fmt)
    result = scan_layer(io.BytesIO(raw), "long")
    assert [p.name for p in result.files[deep]] == ["pkg_name"]


def test_base_256_sizes_are_read() -> None:
    raw = bytearray(
        tar_bytes([("lib/apk/db/installed", APK_INSTALLED), ("z", b"end")], tarfile.USTAR_FORMAT)
    )
    size = len(APK_INSTALLED)
    raw[124:136] = b"\x80" + size.to_bytes(11, "big")
    raw[148:156] = b" " * 8
    raw[148:156] = b"%06o\x00 " % sum(raw[:512])
    result = scan_layer(io.BytesIO(bytes(raw)), "b256")
    assert len(result.files["lib/apk/db/installed"]) == 2


def test_chunk_iterators_are_accepted_and_counted() -> None:
    blob = compress(
        tar_bytes([("var/lib/dpkg/status", DPKG_STATUS_2), ("f", os.urandom(100_000))]), "gzip"
    )

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(blob), 333):
            yield blob[i : i + 333]
            yield b""

    result = scan_layer(chunks(), "iter")
    assert result.bytes_read == len(blob)
    assert len(result.files["var/lib/dpkg/status"]) == 2


def test_os_release_is_read_through_the_usr_lib_fallback() -> None:
    result = scan(
        [
            ("usr/lib/os-release", b'PRETTY_NAME="Debian"\nID=debian\nVERSION_ID="12"\n'),
            ("etc/os-release", "->../usr/lib/os-release"),
        ]
    )
    osr = os_release([result])
    assert osr is not None
    assert (osr.id, osr.version_id, osr.release) == ("debian", "12", "12")


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "blob",
    [b"this is not a tar archive" * 40, gzip.compress(b"hello " * 200), b"", b"short"],
    ids=["text", "gzip-of-text", "empty", "short"],
)
def test_a_blob_that_is_not_a_tar_raises_a_clear_error_naming_the_layer(blob: bytes) -> None:
    with pytest.raises(LayerError, match=r"layer sha256:feed: not a (gzip )?tar archive") as info:
        scan_layer(io.BytesIO(blob), "sha256:feed")
    assert info.value.layer == "sha256:feed"


@pytest.mark.parametrize("how", ["none", "gzip", "zstd"])
def test_a_truncated_layer_raises_a_clear_error(how: str) -> None:
    blob = compress(
        tar_bytes([("var/lib/dpkg/status", DPKG_STATUS_1), ("f", os.urandom(200_000))]), how
    )
    with pytest.raises(LayerError, match="layer cut: corrupt or truncated"):
        scan_layer(io.BytesIO(blob[: len(blob) // 2]), "cut")


def test_a_corrupt_gzip_checksum_is_caught() -> None:
    blob = bytearray(compress(tar_bytes([("f", b"x" * 1000)]), "gzip"))
    blob[-6] ^= 0xFF  # CRC32 of the gzip trailer
    with pytest.raises(LayerError, match="corrupt"):
        scan_layer(io.BytesIO(bytes(blob)), "crc")


# -- the image -------------------------------------------------------------------------


def test_layer_stack_hides_whited_out_replaced_and_opaque_databases() -> None:
    site = "usr/lib/python3/site-packages"
    base = scan(
        [
            ("etc/os-release", b"ID=debian\nVERSION_ID=12\n"),
            ("var/lib/dpkg/status", DPKG_STATUS_1),
            ("lib/apk/db/installed", APK_INSTALLED),
            (f"{site}/six-1.16.0.dist-info/METADATA", metadata("six", "1.16.0")),
            (
                "opt/app/site-packages/requests-2.0.0.dist-info/METADATA",
                metadata("requests", "2.0.0"),
            ),
            ("srv/old-1.0.egg-info", metadata("old", "1.0")),
        ],
        "none",
        "base",
    )
    upgrade = scan(
        [
            ("var/lib/dpkg/status", DPKG_STATUS_2),  # replaces the base layer's database
            ("lib/apk/db/.wh.installed", b""),  # removes the apk database
            (f"{site}/.wh.six-1.16.0.dist-info", b""),  # pip upgraded six
            (f"{site}/six-1.17.0.dist-info/METADATA", metadata("six", "1.17.0")),
            # a whiteout hides lower layers only, never its own layer's files
            ("srv/.wh.new-2.0.egg-info", b""),
            ("srv/new-2.0.egg-info", metadata("new", "2.0")),
        ],
        "gzip",
        "upgrade",
    )
    app = scan(
        [
            ("opt/app/.wh..wh..opq", b""),  # a fresh /opt/app: requests 2.0.0 is gone
            ("opt/app/site-packages/flask-3.0.0.dist-info/METADATA", metadata("flask", "3.0.0")),
        ],
        "zstd",
        "app",
    )
    packages = merge_layers([base, upgrade, app])
    assert names(packages) == {
        ("Debian", "libfoo1", "1.0-2+b1"),
        ("Debian", "newpkg", "3.1-1"),
        ("PyPI", "six", "1.17.0"),
        ("PyPI", "new", "2.0"),
        ("PyPI", "old", "1.0"),
        ("PyPI", "flask", "3.0.0"),
    }
    libfoo = next(p for p in packages if p.name == "libfoo1")
    assert (libfoo.match_name, libfoo.match_version) == ("foo", "1.0-2")
    assert (libfoo.release, libfoo.osv_ecosystem) == ("12", "Debian:12")
    assert libfoo.path == "var/lib/dpkg/status"
    assert next(p for p in packages if p.name == "six").osv_ecosystem == "PyPI"
    # only the base layer: its own packages
    assert ("Debian", "libfoo1", "1.0-1+b1") in names(merge_layers([base]))
    assert ("PyPI", "requests", "2.0.0") in names(merge_layers([base, upgrade]))


def test_a_symlink_over_a_database_hides_the_lower_one() -> None:
    base = scan([("var/lib/dpkg/status", DPKG_STATUS_1)])
    top = scan([("var/lib/dpkg/status", "->/dev/null")])
    assert merge_layers([base, top]) == []


def test_whiting_out_a_parent_directory_hides_everything_under_it() -> None:
    base = scan([("var/lib/dpkg/status", DPKG_STATUS_1), ("usr/lib/os-release", b"ID=debian\n")])
    top = scan([("var/.wh.lib", b""), ("usr/lib/.wh..wh..opq", b"")])
    assert merge_layers([base, top]) == []
    assert os_release([base, top]) is None


def test_alpine_packages_get_the_branch_release_and_origin() -> None:
    layer = scan(
        [
            ("etc/os-release", b'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.1\n'),
            ("lib/apk/db/installed", APK_INSTALLED),
        ],
        "gzip",
    )
    packages = merge_layers([layer])
    assert [(p.osv_ecosystem, p.match_name, p.match_version) for p in packages] == [
        ("Alpine:v3.19", "musl", "1.2.4_git20230717-r4"),
        ("Alpine:v3.19", "busybox", "1.36.1-r15"),
    ]


def test_dpkg_packages_on_ubuntu_are_ubuntu_packages() -> None:
    layer = scan(
        [
            ("etc/os-release", b'ID=ubuntu\nID_LIKE=debian\nVERSION_ID="22.04"\n'),
            ("var/lib/dpkg/status", DPKG_STATUS_2),
        ]
    )
    assert {p.osv_ecosystem for p in merge_layers([layer])} == {"Ubuntu:22.04"}


def test_without_os_release_os_packages_have_no_release() -> None:
    packages = merge_layers([scan([("var/lib/dpkg/status", DPKG_STATUS_2)])])
    assert {p.osv_ecosystem for p in packages} == {"Debian"}


@pytest.mark.skipif(
    shutil.which("dpkg-query") is None or not Path("/var/lib/dpkg/status").is_file(),
    reason="needs a dpkg system",
)
def test_this_machines_dpkg_status_yields_what_dpkg_query_lists_as_installed() -> None:
    listed = subprocess.run(
        ["dpkg-query", "-W", "-f", "${db:Status-Status}\t${Package}\t${Version}\n"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    expected = {
        (name, version)
        for status, name, version in (line.split("\t") for line in listed.splitlines())
        if status == "installed"
    }
    layer = scan([("var/lib/dpkg/status", Path("/var/lib/dpkg/status").read_bytes())], "gzip")
    found = {(p.name, p.version) for p in merge_layers([layer])}
    assert expected
    assert found == expected
