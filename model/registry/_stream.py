"""Reading a blob from a registry: the streamed answer to one ``GET``, and a reader
that asks again with ``Range`` from where an answer broke off."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TypeVar

import httpx
from loguru import logger

from model.registry._errors import (
    RegistryContentError,
    RegistryUnavailableError,
    error_from_transport,
)
from model.registry._retry import RetryPolicy, check_stop, pause
from model.registry._session import Request, Session, pull_scopes

__all__ = ["MAX_SOURCE_REOPENS", "READ_CHUNK_BYTES", "BlobStream", "SourceReader"]

_T = TypeVar("_T")

#: Size of the reads from a source blob stream. Every chunk passes through a few layers
#: of Python on its way to the target (hashing, the request body, the socket), so the
#: chunk's size sets their cost: copying a 200 MB image, 256 KiB took a third less of
#: this process's CPU than 64 KiB (``scripts/bench/replication.py``), for a few chunks
#: of memory per blob being copied.
READ_CHUNK_BYTES = 256 * 1024
#: Times the source's ``GET`` of one blob is sent again (with ``Range``) before a copy
#: gives up, however much each answer moved.
MAX_SOURCE_REOPENS = 50

_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class BlobStream:
    """The bytes of one blob as the registry sends them, made by
    :meth:`RegistryClient.open_blob`.

    Iterate once for chunks of at most ``READ_CHUNK_BYTES`` (raw, never decoded);
    ``size`` is the ``Content-Length`` if sent. The connection stays open until
    the iteration ends or :meth:`close` is called; use it as a context manager.
    A network failure while reading raises the retryable
    :class:`RegistryUnavailableError`.
    """

    def __init__(
        self, response: httpx.Response, *, registry: str, repository: str, digest: str
    ) -> None:
        self._response = response
        self._registry = registry
        self.repository = repository
        self.digest = digest
        length = response.headers.get("content-length")
        self.size: int | None = int(length) if length and length.isdigit() else None

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._response.iter_raw(READ_CHUNK_BYTES)
        except httpx.TransportError as exc:
            raise error_from_transport(
                exc,
                "read blob",
                registry=self._registry,
                repository=self.repository,
                reference=self.digest,
            ) from None
        finally:
            self.close()

    def close(self) -> None:
        """Release the connection; safe to call more than once."""
        self._response.close()

    def __enter__(self) -> BlobStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SourceReader:
    """The bytes of one blob of a source registry from :attr:`position` on, a read chunk
    at a time, sent again with ``Range: bytes=<position>-`` when an answer breaks off
    (network failure, truncated body) or fails (5xx, 429): the reader resumes from what
    it handed out, with the backoff of ``policy``. A registry that ignores ``Range``
    (200) has the bytes before :attr:`position` skipped.

    Going back (:meth:`seek` to an earlier position, when the target lost what it was
    sent) keeps the answer under way open: the bytes in between are asked for with a
    bounded ``Range``, then the open answer goes on, so what it had in flight is not
    thrown away and fetched again. Not thread-safe."""

    def __init__(
        self,
        session: Session,
        repository: str,
        digest: str,
        size: int | None,
        policy: RetryPolicy,
    ) -> None:
        self.session = session
        self.repository = repository
        self.digest = digest
        #: Bytes the blob has: the manifest's size, else what the registry announced.
        self.total = size
        #: Bytes handed out so far (where the next read starts).
        self.position = 0
        #: Answers that broke off and were asked for again.
        self.reopens = 0
        self._policy = policy
        self._stream: BlobStream | None = None
        self._chunks: Iterator[bytes] | None = None
        # Going back: the bytes [position, _replay_end) come from a bounded answer first.
        self._replay_end: int | None = None
        self._replay: BlobStream | None = None
        self._replay_chunks: Iterator[bytes] | None = None

    def size(self) -> int | None:
        """:attr:`total`, asking the registry first when the manifest gave no size."""
        if self.total is None and self._chunks is None:
            self._retrying(self._open)
        return self.total

    def read(self) -> bytes:
        """The next chunk (``b""`` at the end). Raises the retryable
        :class:`RegistryUnavailableError` when the tries are exhausted,
        :class:`RegistryContentError` for a blob of another size than announced."""
        return self._retrying(self._next)

    def seek(self, position: int) -> None:
        """The next read starts at ``position``. Back from an open answer, that answer
        waits while the bytes up to where it stands are read again."""
        end = self._replay_end if self._replay_end is not None else self.position
        if self._chunks is not None and position <= end:
            self._close_replay()
            if position < end:
                self._replay_end = end
        else:
            self.close()
        self.position = position

    def close(self) -> None:
        self._close_replay()
        if self._stream is not None:
            self._stream.close()
        self._stream = self._chunks = None

    def _close_replay(self) -> None:
        if self._replay is not None:
            self._replay.close()
        self._replay = self._replay_chunks = None
        self._replay_end = None

    def _retrying(self, action: Callable[[], _T]) -> _T:
        failures = 0
        while True:
            try:
                return action()
            except RegistryUnavailableError as exc:
                self.close()
                failures += 1
                self.reopens += 1
                check_stop()
                delay = self._policy.delay_s(failures, exc.retry_after)
                if delay is None or self.reopens > MAX_SOURCE_REOPENS:
                    raise
                logger.debug(
                    "blob {}: the source failed at byte {} ({}), asking again in {:.1f} s",
                    self.digest,
                    self.position,
                    exc,
                    delay,
                )
                pause(delay)

    def _next(self) -> bytes:
        if self._replay_end is not None:
            return self._next_replayed(self._replay_end)
        if self._chunks is None:
            self._open()
        assert self._chunks is not None
        chunk = next(self._chunks, b"")
        self.position += len(chunk)
        return chunk

    def _next_replayed(self, end: int) -> bytes:
        """The next chunk of the bytes gone back over; a failure drops the open answer
        too (the next read asks from :attr:`position` on)."""
        if self._replay_chunks is None:
            self._replay, self._replay_chunks = self._get(end - 1)
        chunk = next(self._replay_chunks, b"")
        if not chunk:
            raise RegistryUnavailableError(
                "read blob",
                registry=self.session.url,
                repository=self.repository,
                reference=self.digest,
                detail=f"the answer for bytes {self.position}-{end - 1} ended early",
            )
        chunk = chunk[: end - self.position]
        self.position += len(chunk)
        if self.position >= end:
            self._close_replay()
        return chunk

    def _open(self) -> None:
        self._stream, self._chunks = self._get(None)

    def _get(self, last: int | None) -> tuple[BlobStream, Iterator[bytes]]:
        """An answer from :attr:`position` on (to byte ``last`` when given)."""
        headers = {"Accept-Encoding": "identity"}
        if self.position or last is not None:
            headers["Range"] = f"bytes={self.position}-{'' if last is None else last}"
        response = self.session.send(
            Request(
                "GET",
                f"/v2/{self.repository}/blobs/{self.digest}",
                what="get blob",
                repository=self.repository,
                reference=self.digest,
                scopes=pull_scopes(self.repository),
                headers=headers,
                expect=(200, 206) if "Range" in headers else (200,),
                stream=True,
                follow_redirects=True,
            )
        )
        stream = BlobStream(
            response, registry=self.session.url, repository=self.repository, digest=self.digest
        )
        chunks = iter(stream)
        if response.status_code == 206:
            match = _CONTENT_RANGE_RE.match(response.headers.get("content-range", "").strip())
            if match is None or int(match.group(1)) != self.position:
                stream.close()
                raise RegistryContentError(
                    "get blob",
                    registry=self.session.url,
                    repository=self.repository,
                    reference=self.digest,
                    status=206,
                    detail=f"asked for bytes {self.position}- and got "
                    f"{response.headers.get('content-range')!r}",
                )
            if self.total is None and match.group(3) != "*":
                self.total = int(match.group(3))
        else:
            if self.total is None:
                self.total = stream.size
            if self.position:
                chunks = _skipped(chunks, self.position)
        return stream, chunks


def _skipped(chunks: Iterator[bytes], count: int) -> Iterator[bytes]:
    """``chunks`` without their first ``count`` bytes."""
    for chunk in chunks:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        yield chunk[count:]
        count = 0
