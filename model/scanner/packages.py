"""Installed packages of a container image, read layer by layer from the layer blobs.

:func:`scan_layer` streams one layer (gzip, zstd or plain tar, told apart by their magic
bytes) once, front to back, and never holds more than a few MiB of it: members that do
not matter are skipped without being turned into Python objects, and only package
databases, Python metadata headers and ``os-release`` are read. It records per layer

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

import io
import posixpath
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import IO, BinaryIO, TypeVar, cast

import zstandard
from debian.deb822 import Deb822

from model.scanner.errors import LayerError

__all__ = [
    "CHUNK_BYTES",
    "MAX_DATABASE_BYTES",
    "LayerScan",
    "OsRelease",
    "Package",
    "merge_layers",
    "os_release",
    "scan_layer",
]

#: Size of the reads from the layer and of the decompressed blocks handed to tarfile.
CHUNK_BYTES = 1 << 20
#: Largest package database file read; a bigger one makes the layer fail.
MAX_DATABASE_BYTES = 64 << 20
#: Compressed input handed to zlib at a time: small enough that the unconsumed rest,
#: which zlib copies whenever the output block fills first, stays cheap to copy.
_GZIP_INPUT_BYTES = 256 << 10
#: Most of a Python METADATA/PKG-INFO file read while looking for its headers.
_MAX_METADATA_BYTES = 1 << 20

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

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


# -- reading the blob ------------------------------------------------------------------


class _Source:
    """The layer blob as ``read(n)`` (up to ``n`` bytes, ``b""`` at the end)."""

    def __init__(self, source: BinaryIO | Iterable[bytes]) -> None:
        self._file: BinaryIO | None = None
        self._chunks: Iterator[bytes] | None = None
        if hasattr(source, "read"):
            self._file = source  # type: ignore[assignment]
        else:
            self._chunks = iter(source)
        self._pending = b""  # read from the source but not yet handed out, from _poff on
        self._poff = 0
        self.count = 0

    def _next(self, size: int) -> bytes:
        """The next piece of the underlying source (a whole chunk for an iterable)."""
        if self._file is not None:
            data = self._file.read(size)
        else:
            assert self._chunks is not None
            data = b""
            for chunk in self._chunks:
                if chunk:
                    data = bytes(chunk)
                    break
        self.count += len(data)
        return data

    def read(self, size: int) -> bytes:
        if not self._pending:
            data = self._next(size)
            if len(data) <= size:
                return data
            self._pending, self._poff = data, 0
        off = self._poff
        data = self._pending[off : off + size]
        self._poff = off + len(data)
        if self._poff >= len(self._pending):
            self._pending, self._poff = b"", 0
        return data

    def peek(self, size: int) -> bytes:
        """The next ``size`` bytes (fewer at the end), left to be read again."""
        data = self._pending[self._poff :]
        while len(data) < size:
            more = self._next(size - len(data))
            if not more:
                break
            data += more
        self._pending, self._poff = data, 0
        return data[:size]

    def skip(self, size: int) -> int:
        """Discard up to ``size`` bytes by seeking where the source can; bytes skipped.

        Never seeks past the end of the file, so a truncated blob is still noticed.
        """
        if self._pending or self._file is None:
            return 0
        try:
            if not self._file.seekable():
                return 0
            here = self._file.tell()
            end = self._file.seek(0, io.SEEK_END)
            size = max(0, min(size, end - here))
            self._file.seek(here + size)
        except (OSError, ValueError):
            return 0
        self.count += size
        return size


class _Truncated(Exception):
    """The compressed stream ended before its end marker."""


class _Gunzip:
    """Decompresses a (multi-member) gzip stream in bounded blocks."""

    def __init__(self, source: _Source) -> None:
        self._source = source
        self._inflate = zlib.decompressobj(wbits=31)
        self._input = b""
        self._done = False

    def read(self, size: int) -> bytes:
        while not self._done:
            if not self._input:
                self._input = self._source.read(_GZIP_INPUT_BYTES)
                if not self._input:
                    if not self._inflate.eof:
                        raise _Truncated("gzip stream ends early")
                    self._done = True
                    break
            if self._inflate.eof:
                if self._input[:2] != _GZIP_MAGIC:
                    self._done = True  # trailing padding after the last member
                    break
                self._inflate = zlib.decompressobj(wbits=31)
            out = self._inflate.decompress(self._input, size)
            self._input = (
                self._inflate.unused_data if self._inflate.eof else self._inflate.unconsumed_tail
            )
            if out:
                return out
        return b""


class _Unzstd:
    """Decompresses a zstd stream (all frames) in bounded blocks."""

    def __init__(self, source: _Source) -> None:
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            cast("IO[bytes]", source), read_size=CHUNK_BYTES, read_across_frames=True
        )

    def read(self, size: int) -> bytes:
        data: bytes = self._reader.read(size)
        return data


class _Plain:
    """An uncompressed tar: the source itself."""

    def __init__(self, source: _Source) -> None:
        self._source = source

    def read(self, size: int) -> bytes:
        return self._source.read(size)

    def skip(self, size: int) -> int:
        return self._source.skip(size)


class _Stream:
    """The uncompressed tar stream: exact reads and forward skips.

    A skip seeks a plain seekable source, or else decompresses into a discarded block,
    so skipped data never piles up in memory.
    """

    def __init__(self, decoder: _Gunzip | _Unzstd | _Plain) -> None:
        self._decoder = decoder
        self._skip = decoder.skip if isinstance(decoder, _Plain) else None
        self._buf = b""
        self._off = 0
        self.pos = 0  #: offset in the tar stream

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes, fewer only where the stream ends."""
        off = self._off
        if len(self._buf) - off >= size:
            self._off = off + size
            self.pos += size
            return self._buf[off : off + size]
        parts = [self._buf[off:]]
        need = size - len(parts[0])
        self._buf, self._off = b"", 0
        while need > 0:
            block = self._decoder.read(max(need, CHUNK_BYTES))
            if not block:
                break
            if len(block) > need:
                parts.append(block[:need])
                self._buf, self._off = block, need
                break
            parts.append(block)
            need -= len(block)
        data = b"".join(parts)
        self.pos += len(data)
        return data

    def skip_to(self, pos: int) -> None:
        """Move forward to offset ``pos`` (or to the end of the stream, if before it)."""
        delta = pos - self.pos
        avail = len(self._buf) - self._off
        if delta <= avail:
            self._off += delta
            self.pos = pos
            return
        self.pos += avail
        delta -= avail
        self._buf, self._off = b"", 0
        if self._skip is not None:
            skipped = self._skip(delta)
            self.pos += skipped
            delta -= skipped
        while delta > 0:
            block = self._decoder.read(min(delta, CHUNK_BYTES))
            if not block:
                return  # past the end: the next header read finds nothing
            self.pos += len(block)
            delta -= len(block)


# -- the tar format --------------------------------------------------------------------

_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_USTAR = b"ustar\x00"
_REGTYPES = frozenset(b"0\x007")  # regular file, old regular file, contiguous file
_NO_DATA_TYPES = frozenset(b"123456")  # hard/sym link, devices, directory, fifo
_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK, _GNU_SPARSE, _HARDLINK = b"xgLKS1"
_MAX_META_BYTES = 1 << 20  # largest pax header or GNU long name accepted


class _BadTar(Exception):
    """The tar stream is malformed (the message says how)."""


class _NotTar(_BadTar):
    """The stream does not start with a tar header."""


class _Member:
    """One archive member, as the scan needs it."""

    __slots__ = ("linkname", "name", "size", "type")

    def __init__(self, name: str, type_: int, size: int, linkname: str) -> None:
        self.name = name
        self.type = type_
        self.size = size  #: bytes of data that follow the header
        self.linkname = linkname

    def isreg(self) -> bool:
        return self.type in _REGTYPES


def _text(field: bytes) -> str:
    return field.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or base-256 if the high bit is set."""
    if field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 8)) if field[0] == 0xFF else value
    text = field.split(b"\x00", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise _BadTar(f"bad number field {field!r}") from None


def _checksum_ok(header: bytes) -> bool:
    stored = _number(header[148:156])
    unsigned = sum(header) - sum(header[148:156]) + 8 * 0x20
    if stored == unsigned:
        return True
    # some old tars summed signed chars
    signed = sum(b - 256 if b > 127 else b for b in header[:148] + header[156:]) + 8 * 0x20
    return stored == signed


def _pax_records(data: bytes) -> dict[str, str]:
    """The ``key=value`` records of a pax extended header (``"%d %s=%s\\n"``)."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise _BadTar("bad pax header") from None
        if length <= 0:
            raise _BadTar("bad pax header")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _read_meta(stream: _Stream, size: int) -> bytes:
    """The data of a pax/GNU meta member, its padding skipped."""
    if size > _MAX_META_BYTES:
        raise _BadTar(f"meta header of {size} bytes")
    data = stream.read(size)
    if len(data) < size:
        raise _BadTar("unexpected end of data")
    stream.skip_to(stream.pos + (-size % _BLOCK))
    return data


def _members(stream: _Stream) -> Iterator[_Member]:
    """The members of a tar (ustar, GNU, pax) stream, front to back.

    After each member is yielded the caller may ``stream.read`` up to ``member.size``
    bytes of its data; the rest is skipped when the next member is asked for. The
    archive ends at a zero block or at the end of the stream on a block boundary.
    Raises :class:`_BadTar` for a bad first block (not a tar), a bad checksum, or a
    stream that ends inside a header or a member.
    """
    pax: dict[str, str] = {}
    long_name = long_link = ""
    first = True
    while True:
        header = stream.read(_BLOCK)
        if len(header) < _BLOCK:
            if first:
                raise _NotTar("empty stream" if not header else "shorter than one tar header")
            if header:
                raise _BadTar("truncated header")
            if long_name or pax:
                raise _BadTar("unexpected end of data")
            return
        if header == _ZERO_BLOCK:
            return
        try:
            valid = _checksum_ok(header)
        except _BadTar as exc:
            if first:
                raise _NotTar("invalid header") from exc
            raise
        if not valid:
            raise (_NotTar("invalid header") if first else _BadTar("bad header checksum"))
        first = False
        kind = header[156]
        size = _number(header[124:136])
        if kind == _PAX:
            pax = _pax_records(_read_meta(stream, size))
            continue
        if kind == _GNU_LONGNAME:
            long_name = _text(_read_meta(stream, size))
            continue
        if kind == _GNU_LONGLINK:
            long_link = _text(_read_meta(stream, size))
            continue
        if kind == _PAX_GLOBAL:
            _read_meta(stream, size)
            continue
        if kind == _GNU_SPARSE and header[482]:
            extension = header
            while extension[504]:
                extension = stream.read(_BLOCK)
                if len(extension) < _BLOCK:
                    raise _BadTar("unexpected end of data")
        name = pax.get("path") or long_name
        if not name:
            name = _text(header[0:100])
            if header[257:263] == _USTAR and header[345]:
                name = _text(header[345:500]) + "/" + name
        linkname = pax.get("linkpath") or long_link or _text(header[157:257])
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise _BadTar("bad pax size") from None
        if kind in _NO_DATA_TYPES:
            size = 0  # as tarfile: these carry no data whatever the size field says
        pax, long_name, long_link = {}, "", ""
        end = stream.pos + size + (-size % _BLOCK)
        yield _Member(name, kind, size, linkname)
        stream.skip_to(end)
        if stream.pos < end:
            raise _BadTar("unexpected end of data")


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


def _read_headers(stream: _Stream, size: int) -> bytes:
    """The header block of a metadata file: up to its first blank line (bounded)."""
    data = b""
    limit = min(size, _MAX_METADATA_BYTES)
    while len(data) < limit:
        block = stream.read(min(64 << 10, limit - len(data)))
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
    src = _Source(source)
    magic = src.peek(4)
    decoder: _Gunzip | _Unzstd | _Plain
    if magic[:2] == _GZIP_MAGIC:
        compression, decoder = "gzip", _Gunzip(src)
    elif magic == _ZSTD_MAGIC:
        compression, decoder = "zstd", _Unzstd(src)
    else:
        compression, decoder = "none", _Plain(src)
    stream = _Stream(decoder)
    files: dict[str, tuple[Package, ...]] = {}
    os_releases: dict[str, OsRelease | None] = {}
    whiteouts: set[str] = set()
    opaque: set[str] = set()
    what = f"{compression} tar" if compression != "none" else "tar"
    try:
        for member in _members(stream):
            path = _normalize(member.name)
            base = path.rpartition("/")[2]
            if base.startswith(_WHITEOUT):
                parent = path[: -len(base)].rstrip("/")
                if base == _OPAQUE:
                    opaque.add(parent)
                elif not base.startswith(_WHITEOUT + _WHITEOUT):  # not aufs metadata
                    whiteouts.add(posixpath.join(parent, base[len(_WHITEOUT) :]))
                continue
            kind = _kind(path)
            if kind is None:
                continue
            if not member.isreg():
                if kind == _OS:
                    os_releases[path] = None
                    continue
                target = _normalize(member.linkname) if member.type == _HARDLINK else ""
                files[path] = tuple(replace(p, path=path) for p in files.get(target, ()))
                continue
            if kind == _PYTHON:
                files[path] = _python_package(_read_headers(stream, member.size), path)
                continue
            if member.size > MAX_DATABASE_BYTES:
                raise LayerError(
                    layer, f"{path} is {member.size} bytes, more than {MAX_DATABASE_BYTES}"
                )
            data = stream.read(member.size)
            if len(data) < member.size:
                raise _BadTar("unexpected end of data")
            if kind == _DPKG:
                files[path] = _dpkg_packages(data, path)
            elif kind == _APK:
                files[path] = _apk_packages(data, path)
            else:
                os_releases[path] = _os_release(data)
        # Read to the end: a compressed stream's checksum is verified there, and a
        # caller hashing the blob as it streams sees all of it.
        while decoder.read(CHUNK_BYTES):
            pass
    except _NotTar as exc:
        raise LayerError(layer, f"not a {what} archive ({exc})") from None
    except (_BadTar, zlib.error, zstandard.ZstdError, _Truncated) as exc:
        raise LayerError(layer, f"corrupt or truncated {what} archive ({exc})") from None
    return LayerScan(
        layer=layer,
        files=files,
        os_releases=os_releases,
        whiteouts=frozenset(whiteouts),
        opaque_dirs=frozenset(opaque),
        compression=compression,
        bytes_read=src.count,
    )


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
