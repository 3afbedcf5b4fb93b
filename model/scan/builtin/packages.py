"""Installed packages of a container image, read layer by layer from the layer blobs.

:func:`scan_layer` streams one layer (gzip, zstd or plain tar, told apart by their magic
bytes) once, front to back, through :class:`~model.scan.builtin.tarstream.LayerReader`, and
never holds more than a few MiB of it: members that do not matter are skipped unread,
and only package databases, Python metadata headers and ``os-release`` are read. It
records per layer

- the package databases found, per path: ``var/lib/dpkg/status``,
  ``var/lib/dpkg/status.d/*`` (deb822), ``lib/apk/db/installed`` (``P:``/``V:``/``o:``
  records), ``*.dist-info/METADATA``, ``*.egg-info/PKG-INFO`` and ``*.egg-info`` files
  (``Name:``/``Version:`` headers). A non-regular entry (symlink, directory…) at such a
  path is recorded with no packages: it hides what lower layers had there;
- ``etc/os-release`` and ``usr/lib/os-release``;
- whiteouts (``.wh.<name>`` deletes ``<name>`` and everything under it) and opaque
  directories (``.wh..wh..opq``: lower layers' entries under that directory are hidden).

:func:`merge_layers` applies the layers in order, as an overlay filesystem would (a
layer's whiteouts hide lower layers' entries only, then its own entries replace lower
ones at the same path), and returns the packages of the final filesystem, tagged with
the OS release so that OSV ecosystems like ``"Debian:12"`` or ``"Alpine:v3.19"`` match.

Not modelled: a later layer that puts a file where a lower layer had a directory holding
a package database (the database is still reported), and hard links to package
databases in lower layers.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO, TypeVar

from debian.deb822 import Deb822

from model.scan.builtin.errors import LayerError
from model.scan.builtin.tarstream import LayerReader, Member, NotTar, TarError

__all__ = [
    "MAX_DATABASE_BYTES",
    "LayerScan",
    "OsRelease",
    "Package",
    "merge_layers",
    "os_release",
    "scan_layer",
]

#: Largest package database file read; a bigger one makes the layer fail.
MAX_DATABASE_BYTES = 64 << 20
#: Most of a Python METADATA/PKG-INFO file read while looking for its headers.
_MAX_METADATA_BYTES = 1 << 20

_DPKG_STATUS = "var/lib/dpkg/status"
_DPKG_STATUS_D = "var/lib/dpkg/status.d/"
_APK_INSTALLED = "lib/apk/db/installed"
_OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"

_DPKG, _APK, _PYTHON, _OS = "dpkg", "apk", "python", "os-release"

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Package:
    """One installed package (a component, in Harbor's words)."""

    ecosystem: str  #: "Debian", "Ubuntu", "Alpine" or "PyPI"
    name: str  #: binary package name (the distribution name for PyPI)
    version: str  #: installed version
    source_name: str = ""  #: source package (Debian ``Source:``, Alpine origin ``o:``)
    source_version: str = ""  #: version of the source package ("" = same as ``version``)
    path: str = ""  #: database file it was read from, relative to the image root
    release: str = ""  #: OS release in OSV form ("12", "v3.19", "22.04"), "" if unknown

    @property
    def match_name(self) -> str:
        """The name OSV records use: the source package for Debian and Alpine."""
        return self.source_name or self.name

    @property
    def match_version(self) -> str:
        """The version OSV records use: the source package's version if it differs."""
        return self.source_version or self.version

    @property
    def osv_ecosystem(self) -> str:
        """OSV ecosystem string: ``"Debian:12"``, ``"Alpine:v3.19"``, ``"PyPI"``."""
        return f"{self.ecosystem}:{self.release}" if self.release else self.ecosystem


@dataclass(frozen=True, slots=True)
class OsRelease:
    """The ``ID`` and ``VERSION_ID`` of an ``os-release`` file."""

    id: str
    version_id: str

    @property
    def release(self) -> str:
        """The release as OSV ecosystems spell it: ``"12"``, ``"v3.19"``, ``"22.04"``."""
        if self.id == "alpine":
            parts = re.findall(r"\d+", self.version_id)[:2]
            return "v" + ".".join(parts) if len(parts) == 2 else ""
        return self.version_id


@dataclass(frozen=True)
class LayerScan:
    """What one layer contributes; see the module docstring."""

    layer: str  #: the name the caller gave the layer (its digest, say)
    files: Mapping[str, tuple[Package, ...]]  #: package database path -> its packages
    os_releases: Mapping[str, OsRelease | None]  #: os-release path -> content (None: not a file)
    whiteouts: frozenset[str]  #: paths this layer deletes, with everything under them
    opaque_dirs: frozenset[str]  #: directories whose lower-layer content this layer hides
    compression: str  #: "gzip", "zstd" or "none"
    bytes_read: int  #: bytes of the layer blob consumed


# -- parsing package databases ---------------------------------------------------------

_SOURCE = re.compile(r"^\s*(\S+)(?:\s*\(\s*([^)\s]+)\s*\))?")


def _dpkg_packages(data: bytes, path: str) -> tuple[Package, ...]:
    """Installed packages of a dpkg status file (or a ``status.d`` entry).

    A paragraph counts if its ``Status`` says the package is ``installed`` (want
    install or hold); ``config-files``, ``not-installed`` (purged) and half-installed
    states do not. ``status.d`` entries without a ``Status`` count as installed.
    """
    found: list[Package] = []
    lines = data.decode("utf-8", "replace").splitlines(keepends=True)
    fields = ["Package", "Version", "Status", "Source"]
    for para in Deb822.iter_paragraphs(lines, fields=fields, use_apt_pkg=False):
        name, version = para.get("Package", "").strip(), para.get("Version", "").strip()
        if not name or not version:
            continue
        status = para.get("Status", "").split()
        if status and status[-1] != "installed":
            continue
        source_name, source_version = "", ""
        match = _SOURCE.match(para.get("Source", ""))
        if match:
            source_name, source_version = match.group(1), match.group(2) or ""
        found.append(
            Package(
                ecosystem="Debian",
                name=name,
                version=version,
                source_name=source_name or name,
                source_version=source_version or version,
                path=path,
            )
        )
    return tuple(found)


def _apk_packages(data: bytes, path: str) -> tuple[Package, ...]:
    """Packages of an apk ``installed`` database (``P:`` name, ``V:`` version, ``o:`` origin)."""
    found: list[Package] = []
    record: dict[str, str] = {}

    def flush() -> None:
        name, version = record.get("P", ""), record.get("V", "")
        if name and version:
            found.append(
                Package(
                    ecosystem="Alpine",
                    name=name,
                    version=version,
                    source_name=record.get("o", "") or name,
                    source_version=version,
                    path=path,
                )
            )
        record.clear()

    for raw in data.decode("utf-8", "replace").splitlines():
        if not raw.strip():
            flush()
        elif len(raw) > 2 and raw[1] == ":" and raw[0] in "PVo":
            record.setdefault(raw[0], raw[2:].strip())
    flush()
    return tuple(found)


def _python_package(headers: bytes, path: str) -> tuple[Package, ...]:
    """The distribution named by ``Name:``/``Version:`` in Python core metadata headers."""
    name = version = ""
    for raw in headers.decode("utf-8", "replace").splitlines():
        if not raw.strip():
            break
        key, sep, value = raw.partition(":")
        if not sep or raw[0] in " \t":
            continue
        key = key.strip().lower()
        if key == "name" and not name:
            name = value.strip()
        elif key == "version" and not version:
            version = value.strip()
    if not name or not version:
        return ()
    return (Package(ecosystem="PyPI", name=name, version=version, path=path),)


def _os_release(data: bytes) -> OsRelease:
    values: dict[str, str] = {}
    for raw in data.decode("utf-8", "replace").splitlines():
        key, sep, value = raw.strip().partition("=")
        if sep and key in ("ID", "VERSION_ID"):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            values[key] = value
    return OsRelease(id=values.get("ID", "").lower(), version_id=values.get("VERSION_ID", ""))


def _read_headers(reader: LayerReader, size: int) -> bytes:
    """The header block of a metadata file: up to its first blank line (bounded)."""
    data = b""
    limit = min(size, _MAX_METADATA_BYTES)
    while len(data) < limit:
        block = reader.read(min(64 << 10, limit - len(data)))
        if not block:
            break
        data += block
        if b"\n\n" in data or b"\r\n\r\n" in data:
            break
    return data


# -- one layer -------------------------------------------------------------------------


def _normalize(name: str) -> str:
    """Tar member name -> path relative to the image root ("./usr//x" -> "usr/x")."""
    return posixpath.normpath("/" + name.lstrip("/")).lstrip("/")


def _kind(path: str) -> str | None:
    """Which database (if any) a path is."""
    if path == _DPKG_STATUS:
        return _DPKG
    if path.startswith(_DPKG_STATUS_D):
        rest = path[len(_DPKG_STATUS_D) :]
        if rest and "/" not in rest and not rest.endswith(".md5sums"):
            return _DPKG
        return None
    if path == _APK_INSTALLED:
        return _APK
    if (
        path.endswith(".dist-info/METADATA")
        or path.endswith(".egg-info/PKG-INFO")
        or path.endswith(".egg-info")
    ):
        return _PYTHON
    if path in _OS_RELEASE:
        return _OS
    return None


def scan_layer(source: BinaryIO | Iterable[bytes], layer: str = "layer") -> LayerScan:
    """Stream one layer blob and collect what it contributes (see the module docstring).

    ``source`` is a binary file object (read front to back; seeked forward over skipped
    data if it is a seekable plain tar) or an iterable of byte chunks. ``layer`` names
    the layer in errors. Raises :class:`LayerError` if the blob is not a (gzip/zstd
    compressed) tar, is corrupt or truncated, or holds a package database bigger than
    :data:`MAX_DATABASE_BYTES`. Errors of ``source`` itself (network, disk) propagate.
    """
    reader = LayerReader(source)
    found = _Found()
    what = "tar" if reader.compression == "none" else f"{reader.compression} tar"
    try:
        for member in reader.members():
            found.take(reader, member, layer)
        reader.finish()
    except NotTar as exc:
        raise LayerError(layer, f"not a {what} archive ({exc})") from None
    except TarError as exc:
        raise LayerError(layer, f"corrupt or truncated {what} archive ({exc})") from None
    return LayerScan(
        layer=layer,
        files=found.files,
        os_releases=found.os_releases,
        whiteouts=frozenset(found.whiteouts),
        opaque_dirs=frozenset(found.opaque),
        compression=reader.compression,
        bytes_read=reader.bytes_read,
    )


class _Found:
    """What :func:`scan_layer` collects from a layer's members, as it goes."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[Package, ...]] = {}
        self.os_releases: dict[str, OsRelease | None] = {}
        self.whiteouts: set[str] = set()
        self.opaque: set[str] = set()

    def take(self, reader: LayerReader, member: Member, layer: str) -> None:
        """Records ``member`` if it is a whiteout, a package database or an
        os-release file (its data read from ``reader``); skips it otherwise."""
        path = _normalize(member.name)
        base = path.rpartition("/")[2]
        if base.startswith(_WHITEOUT):
            parent = path[: -len(base)].rstrip("/")
            if base == _OPAQUE:
                self.opaque.add(parent)
            elif not base.startswith(_WHITEOUT + _WHITEOUT):  # not aufs metadata
                self.whiteouts.add(posixpath.join(parent, base[len(_WHITEOUT) :]))
            return
        kind = _kind(path)
        if kind is None:
            return
        if not member.isreg():
            if kind == _OS:
                self.os_releases[path] = None
                return
            target = _normalize(member.linkname) if member.islnk() else ""
            self.files[path] = tuple(replace(p, path=path) for p in self.files.get(target, ()))
            return
        if kind == _PYTHON:
            self.files[path] = _python_package(_read_headers(reader, member.size), path)
            return
        if member.size > MAX_DATABASE_BYTES:
            raise LayerError(
                layer, f"{path} is {member.size} bytes, more than {MAX_DATABASE_BYTES}"
            )
        data = reader.read(member.size)
        if kind == _DPKG:
            self.files[path] = _dpkg_packages(data, path)
        elif kind == _APK:
            self.files[path] = _apk_packages(data, path)
        else:
            self.os_releases[path] = _os_release(data)


# -- the image -------------------------------------------------------------------------


def _hide(table: dict[str, _T], layer: LayerScan) -> None:
    """Drop from ``table`` what ``layer``'s whiteouts and opaque directories hide."""
    if not layer.whiteouts and not layer.opaque_dirs:
        return
    prefixes = [d + "/" if d else "" for d in layer.opaque_dirs]
    prefixes += [w + "/" for w in layer.whiteouts]
    for path in list(table):
        if path in layer.whiteouts or any(path.startswith(p) for p in prefixes):
            del table[path]


def os_release(layers: Sequence[LayerScan]) -> OsRelease | None:
    """The image's os-release (``etc/os-release``, else ``usr/lib/os-release``)."""
    table: dict[str, OsRelease | None] = {}
    for layer in layers:
        _hide(table, layer)
        table.update(layer.os_releases)
    return table.get(_OS_RELEASE[0]) or table.get(_OS_RELEASE[1])


def merge_layers(layers: Sequence[LayerScan]) -> list[Package]:
    """The packages of the image whose layers (lowest first) are ``layers``.

    Each layer's whiteouts and opaque directories hide lower layers' databases, then
    its databases replace lower ones at the same path. dpkg packages become ecosystem
    "Ubuntu" on an Ubuntu image; Debian, Ubuntu and Alpine packages get the release of
    the image's os-release. Ordered by database path, then as listed in the database.
    """
    table: dict[str, tuple[Package, ...]] = {}
    for layer in layers:
        _hide(table, layer)
        table.update(layer.files)
    osr = os_release(layers)
    os_id = osr.id if osr else ""
    release = osr.release if osr else ""
    out: list[Package] = []
    for path in sorted(table):
        for pkg in table[path]:
            if pkg.ecosystem == "Debian":
                eco = "Ubuntu" if os_id == "ubuntu" else "Debian"
                rel = release if os_id in ("debian", "ubuntu") else ""
                out.append(replace(pkg, ecosystem=eco, release=rel))
            elif pkg.ecosystem == "Alpine":
                out.append(replace(pkg, release=release if os_id == "alpine" else ""))
            else:
                out.append(pkg)
    return out
