from __future__ import annotations

import gzip
import io
import os
import tarfile

import pytest

from model.scan.builtin.tarstream import LayerReader, NotTar, TarError


def build(fmt: int = tarfile.PAX_FORMAT) -> tuple[bytes, bytes]:
    payload = os.urandom(70_000)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        info = tarfile.TarInfo("dir")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        info = tarfile.TarInfo("dir/" + "n" * 130)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
        info = tarfile.TarInfo("dir/link")
        info.type = tarfile.LNKTYPE
        info.linkname = "dir/" + "n" * 130
        tar.addfile(info)
        info = tarfile.TarInfo("last")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"end"))
    return buf.getvalue(), payload


class Unseekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self._data.read(min(len(b), 5000))
        b[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_members_come_front_to_back_with_partial_reads_skipped(fmt: int) -> None:
    raw, payload = build(fmt)
    reader = LayerReader(io.BytesIO(raw))
    seen = []
    for member in reader.members():
        seen.append((member.name, member.size, member.isreg(), member.islnk(), member.linkname))
        if member.name.startswith("dir/n"):
            assert reader.read(10) == payload[:10]
            assert reader.read(20) == payload[10:30]
        if member.name == "last":
            assert reader.read(100) == b"end"
            assert reader.read(100) == b""
    reader.finish()
    long = "dir/" + "n" * 130
    assert seen == [
        ("dir/", 0, False, False, ""),  # names as stored
        (long, len(payload), True, False, ""),
        ("dir/link", 0, False, True, long),
        ("last", 3, True, False, ""),
    ]
    assert reader.bytes_read == len(raw)
    assert reader.compression == "none"


def test_unseekable_sources_are_read_through() -> None:
    raw, _ = build()
    reader = LayerReader(io.BufferedReader(Unseekable(raw)))
    assert [m.name for m in reader.members()][-1] == "last"
    reader.finish()
    assert reader.bytes_read == len(raw)


def test_concatenated_gzip_members_and_trailing_padding_are_accepted() -> None:
    raw, _ = build()
    half = len(raw) // 2
    blob = gzip.compress(raw[:half]) + gzip.compress(raw[half:]) + bytes(100)
    reader = LayerReader(io.BytesIO(blob))
    assert [m.name for m in reader.members()][-1] == "last"
    reader.finish()
    assert reader.compression == "gzip"
    assert reader.bytes_read == len(blob)


def test_data_ending_before_the_member_does_is_an_error() -> None:
    raw, _ = build()
    reader = LayerReader(io.BytesIO(raw[:3000]))
    with pytest.raises(TarError, match="unexpected end of data"):
        for member in reader.members():
            reader.read(member.size)


def test_a_bad_checksum_after_the_first_header_is_corruption_not_the_end() -> None:
    raw = bytearray(build()[0])
    raw[512 + 10] ^= 0xFF  # inside the second header's name (first is the dir's)
    reader = LayerReader(io.BytesIO(bytes(raw)))
    with pytest.raises(TarError, match="bad header checksum"):
        list(reader.members())


def test_a_stream_that_is_not_a_tar_is_not_a_tar() -> None:
    with pytest.raises(NotTar, match="invalid tar header"):
        list(LayerReader(io.BytesIO(b"{" + b" " * 1023)).members())
    with pytest.raises(NotTar, match="empty"):
        list(LayerReader([]).members())
