"""One forward pass over a layer blob: decompression and tar members, in bounded memory.

:class:`LayerReader` takes a binary file object or an iterable of byte chunks, tells
gzip, zstd and plain tar apart by their magic bytes, and yields the tar members front to
back. The caller reads the data of the members it wants; everything else is skipped by
seeking (a plain, seekable file) or by decompressing into a discarded block, so skipped
data never becomes more than one block of Python bytes at a time.

Why not :mod:`tarfile`: its stream mode (``r|*``) keeps every ``TarInfo`` in
``members``, copies its whole buffer on each header read, and parses a header several
times slower than this reader; layers of small files are header-bound. Formats
read: ustar, GNU (long names, base-256 numbers, old sparse headers) and pax (``path``,
``linkpath``, ``size``); global pax headers are skipped.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, BinaryIO, cast

import zstandard

__all__ = [
    "CHUNK_BYTES",
    "LayerReader",
    "Member",
    "NotTar",
    "TarError",
]

#: Size of the reads from the blob and of the decompressed blocks.
CHUNK_BYTES = 1 << 20
#: Compressed input handed to zlib at a time: small enough that the unconsumed rest,
#: which zlib copies whenever the output block fills first, stays cheap to copy.
_GZIP_INPUT_BYTES = 256 << 10
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_USTAR = b"ustar\x00"
_REGTYPES = frozenset(b"0\x007")  # regular file, old regular file, contiguous file
_NO_DATA_TYPES = frozenset(b"123456")  # hard/sym link, devices, directory, fifo
_LINK_TYPES = frozenset(b"12")  # hard link, symbolic link
_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK, _GNU_SPARSE = b"xgLKS"
_HARDLINK = b"1"[0]
_MAX_META_BYTES = 1 << 20  # largest pax header or GNU long name accepted


class TarError(Exception):
    """The blob is corrupt or truncated (the message says how)."""


class NotTar(TarError):
    """The blob does not start with a tar header (after decompression)."""


class Member:
    """One archive member: its name as stored, type flag, data size and link target.

    ``linkname`` is set for hard and symbolic links only.
    """

    __slots__ = ("linkname", "name", "size", "type")

    def __init__(self, name: str, type_: int, size: int, linkname: str) -> None:
        self.name = name
        self.type = type_  #: the type flag byte (``ord("0")`` for a regular file…)
        self.size = size  #: bytes of data after the header (0 for links, dirs…)
        self.linkname = linkname

    def isreg(self) -> bool:
        """Whether this is a regular file."""
        return self.type in _REGTYPES

    def islnk(self) -> bool:
        """Whether this is a hard link (to ``linkname``, an earlier member)."""
        return self.type == _HARDLINK


# -- the blob --------------------------------------------------------------------------


class _Source:
    """The blob as ``read(n)`` (up to ``n`` bytes, ``b""`` at the end)."""

    def __init__(self, source: BinaryIO | Iterable[bytes]) -> None:
        self._file: BinaryIO | None = None
        self._chunks: Iterator[bytes] | None = None
        if hasattr(source, "read"):
            self._file = cast(BinaryIO, source)
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
                        raise TarError("gzip stream ends early")
                    self._done = True
                    break
            if self._inflate.eof:
                if self._input[:2] != _GZIP_MAGIC:
                    self._done = True  # padding after the last member, ignored as gzip does
                    break
                self._inflate = zlib.decompressobj(wbits=31)
            try:
                out = self._inflate.decompress(self._input, size)
            except zlib.error as exc:
                raise TarError(f"gzip: {exc}") from None
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
        try:
            data: bytes = self._reader.read(size)
        except zstandard.ZstdError as exc:
            raise TarError(f"zstd: {exc}") from None
        return data


class _Plain:
    """An uncompressed tar: the source itself."""

    def __init__(self, source: _Source) -> None:
        self._source = source

    def read(self, size: int) -> bytes:
        return self._source.read(size)


class _Stream:
    """The uncompressed tar stream: exact reads and forward skips."""

    def __init__(self, source: _Source, decoder: _Gunzip | _Unzstd | _Plain) -> None:
        self._decoder = decoder
        self._seek = source.skip if isinstance(decoder, _Plain) else None
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
        if self._seek is not None:
            skipped = self._seek(delta)
            self.pos += skipped
            delta -= skipped
        while delta > 0:
            block = self._decoder.read(min(delta, CHUNK_BYTES))
            if not block:
                return  # past the end: the caller notices pos < what it asked for
            self.pos += len(block)
            delta -= len(block)

    def drain(self) -> None:
        """Decompress what is left (a compressed stream's checksum is checked at its end)."""
        self._buf, self._off = b"", 0
        while block := self._decoder.read(CHUNK_BYTES):
            self.pos += len(block)


# -- the tar format --------------------------------------------------------------------


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
        raise TarError(f"bad numeric field {field!r}") from None


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
            raise TarError("bad pax header") from None
        if length <= 0:
            raise TarError("bad pax header")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class LayerReader:
    """A layer blob opened for one forward pass; see the module docstring.

    Iterate :meth:`members`; while a member is current, :meth:`read` returns its data.
    Every method raises :class:`NotTar` if the blob does not start with a tar header
    and :class:`TarError` if it is corrupt or truncated. Errors of the source itself
    (network, disk) propagate unchanged.
    """

    def __init__(self, source: BinaryIO | Iterable[bytes]) -> None:
        self._source = _Source(source)
        magic = self._source.peek(4)
        decoder: _Gunzip | _Unzstd | _Plain
        if magic[:2] == _GZIP_MAGIC:
            self.compression, decoder = "gzip", _Gunzip(self._source)
        elif magic == _ZSTD_MAGIC:
            self.compression, decoder = "zstd", _Unzstd(self._source)
        else:
            self.compression, decoder = "none", _Plain(self._source)
        self._stream = _Stream(self._source, decoder)
        self._left = 0  # data of the current member not yet read

    @property
    def bytes_read(self) -> int:
        """Bytes of the blob consumed so far."""
        return self._source.count

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the current member's data (``b""`` at its end).

        Raises :class:`TarError` if the blob ends before the member's data does.
        """
        size = min(size, self._left)
        data = self._stream.read(size)
        if len(data) < size:
            raise TarError("unexpected end of data")
        self._left -= size
        return data

    def _read_meta(self, size: int) -> bytes:
        """The data of a pax/GNU meta member, its padding skipped."""
        if size > _MAX_META_BYTES:
            raise TarError(f"meta header of {size} bytes")
        data = self._stream.read(size)
        if len(data) < size:
            raise TarError("unexpected end of data")
        self._stream.skip_to(self._stream.pos + (-size % _BLOCK))
        return data

    def members(self) -> Iterator[Member]:
        """The members, front to back; the archive ends at a zero block or at the end
        of the blob on a block boundary. The data a caller leaves unread is skipped.
        """
        stream = self._stream
        extended = _Extended()
        first = True
        while True:
            header = self._header(first, extended)
            if header is None:
                return
            first = False
            kind = header[156]
            size = _number(header[124:136])
            if self._took_meta(kind, size, extended):
                continue
            if kind == _GNU_SPARSE and header[482]:
                self._skip_sparse_map(header)
            member = _member(header, kind, size, extended)
            extended = _Extended()
            end = stream.pos + member.size + (-member.size % _BLOCK)
            self._left = member.size
            yield member
            self._left = 0
            stream.skip_to(end)
            if stream.pos < end:
                raise TarError("unexpected end of data")

    def _header(self, first: bool, extended: _Extended) -> bytes | None:
        """The next member's header block, None at the archive's end. Raises
        :class:`NotTar` for a ``first`` block that is no tar header, :class:`TarError`
        for a bad one or an end that cuts a member (``extended`` waiting for it)."""
        header = self._stream.read(_BLOCK)
        if len(header) < _BLOCK:
            if first:
                raise NotTar("empty" if not header else "shorter than one tar header")
            if header or extended.pending():
                raise TarError("unexpected end of data")
            return None
        if header == _ZERO_BLOCK:
            return None
        try:
            valid = _checksum_ok(header)
        except TarError:
            valid = False
        if not valid:
            raise NotTar("invalid tar header") if first else TarError("bad header checksum")
        return header

    def _took_meta(self, kind: int, size: int, extended: _Extended) -> bool:
        """Reads a pax or GNU meta member into ``extended`` (for the next member);
        whether the header was one."""
        if kind == _PAX:
            extended.pax = _pax_records(self._read_meta(size))
        elif kind == _GNU_LONGNAME:
            extended.long_name = _text(self._read_meta(size))
        elif kind == _GNU_LONGLINK:
            extended.long_link = _text(self._read_meta(size))
        elif kind == _PAX_GLOBAL:
            self._read_meta(size)
        else:
            return False
        return True

    def _skip_sparse_map(self, header: bytes) -> None:
        """Reads past the extension blocks of an old GNU sparse member's map."""
        extension = header
        while extension[504]:  # more sparse map blocks follow
            extension = self._stream.read(_BLOCK)
            if len(extension) < _BLOCK:
                raise TarError("unexpected end of data")

    def finish(self) -> None:
        """Read the blob to its end: a compressed stream's checksum is verified there,
        and a caller hashing the blob as it streams sees all of it."""
        self._stream.drain()
        while self._source.read(CHUNK_BYTES):
            pass


class _Extended:
    """What pax and GNU meta members say of the member after them."""

    __slots__ = ("long_link", "long_name", "pax")

    def __init__(self) -> None:
        self.pax: dict[str, str] = {}
        self.long_name = ""
        self.long_link = ""

    def pending(self) -> bool:
        """Whether a meta member waits for its member."""
        return bool(self.pax or self.long_name or self.long_link)


def _member(header: bytes, kind: int, size: int, extended: _Extended) -> Member:
    """The member a header block describes, with what ``extended`` says of it."""
    pax = extended.pax
    name = pax.get("path") or extended.long_name
    if not name:
        name = _text(header[0:100])
        if header[257:263] == _USTAR and header[345]:
            name = _text(header[345:500]) + "/" + name
    linkname = ""
    if kind in _LINK_TYPES:
        linkname = pax.get("linkpath") or extended.long_link or _text(header[157:257])
    if "size" in pax:
        try:
            size = int(pax["size"])
        except ValueError:
            raise TarError("bad pax size") from None
    if kind in _NO_DATA_TYPES:
        size = 0  # as tarfile: these carry no data whatever the size field says
    return Member(name, kind, size, linkname)
