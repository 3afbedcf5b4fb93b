"""Blob transfer: an upload session on the target, a streamed download from the source,
and a copier that moves one blob between them in bounded steps."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

import httpx
from loguru import logger

from model.registry._errors import (
    DigestMismatchError,
    RegistryContentError,
    RegistryError,
    error_from_transport,
)

if TYPE_CHECKING:
    from model.registry._client import RegistryClient

__all__ = ["DEFAULT_STEP_BYTES", "BlobCopier", "BlobStream", "BlobUpload"]

#: Bytes a :class:`BlobCopier` moves per step unless told otherwise (one PATCH each).
DEFAULT_STEP_BYTES = 4 * 1024 * 1024
#: Size of the reads from a source blob stream.
READ_CHUNK_BYTES = 64 * 1024
#: What completes a streamed PATCH whose source failed mid-step (see ``BlobCopier._take``).
_FILLER = bytes(READ_CHUNK_BYTES)


class BlobUpload:
    """One upload session on a registry (``POST …/blobs/uploads/``), made by
    :meth:`RegistryClient.start_upload`.

    :meth:`write` appends a chunk held in memory and :meth:`write_stream` one streamed
    from an iterator (one ``PATCH`` each), :meth:`commit` finishes the blob under its
    digest (``PUT ?digest=``), :meth:`cancel` discards the session (``DELETE``). Each
    answer carries the session's next ``Location``, which the next request must use:
    an older one is refused. What is written is hashed with ``algorithm`` on the way
    (:attr:`digest`). A write that failed leaves the session in an unknown state:
    only :meth:`cancel` is allowed then. Used as a context manager, a session that was
    not committed is cancelled on exit. Not thread-safe.
    """

    def __init__(
        self, client: RegistryClient, repository: str, location: str, *, algorithm: str = "sha256"
    ) -> None:
        self._client = client
        self.repository = repository
        #: The URL of the session as of the last answer.
        self.location = location
        #: Bytes written so far.
        self.offset = 0
        self._algorithm = algorithm
        self._hash = hashlib.new(algorithm)
        self._closed = False
        self._broken = False
        self._streamed = 0  # bytes of the current streamed write handed to the request

    @property
    def closed(self) -> bool:
        """Whether the session was committed or cancelled."""
        return self._closed

    @property
    def digest(self) -> str:
        """``algorithm:hex`` of the bytes written so far."""
        return f"{self._algorithm}:{self._hash.hexdigest()}"

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` to the blob. Raises :class:`RegistryError` (retryable for
        network failures and 5xx) and :class:`RegistryNotFoundError` for a lost session."""
        self._check_open()
        if not chunk:
            return
        self._hash.update(chunk)
        self._patch(chunk, len(chunk))

    def write_stream(self, chunks: Iterable[bytes], length: int) -> None:
        """Append exactly ``length`` (> 0) bytes taken from ``chunks`` as they come, in
        one ``PATCH`` with an explicit ``Content-Length`` and ``Content-Range``: only
        the chunk on its way is in memory. ``chunks`` must give exactly ``length``
        bytes (``ValueError`` otherwise); what it raises propagates.

        The body can be sent only once, so the session must be authenticated already
        (the ``POST`` that opened it is): a 401 raises :class:`RegistryAuthExpiredError`
        (retryable) or :class:`RegistryAuthError`. Raises as :meth:`write` otherwise.
        """
        self._check_open()
        if length <= 0:
            raise ValueError("length must be positive")
        self._streamed = 0
        self._patch(self._hashed(chunks, length), length)

    def _hashed(self, chunks: Iterable[bytes], length: int) -> Iterator[bytes]:
        """``chunks``, hashed as they go by (counted in ``_streamed``), checked to add up
        to ``length``."""
        for chunk in chunks:
            self._streamed += len(chunk)
            if self._streamed > length:
                raise ValueError(f"chunks gave more than the {length} bytes announced")
            self._hash.update(chunk)
            yield chunk
        if self._streamed != length:
            raise ValueError(f"chunks gave {self._streamed} bytes, not the {length} announced")

    def _patch(self, content: bytes | Iterator[bytes], length: int) -> None:
        end = self.offset + length - 1
        self._broken = True  # until the registry has taken every byte
        response = self._client._send(
            "PATCH",
            self.location,
            what="upload blob chunk",
            repository=self.repository,
            scopes=self._client._push_scopes(self.repository),
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{self.offset}-{end}",
            },
            content=content,
            content_length=length,
            expect=(202, 204),
        )
        if not isinstance(content, bytes) and self._streamed != length:
            # The registry answered before the body was through: its offset is unknown.
            raise RegistryError(
                "upload blob chunk",
                registry=self._client.url,
                repository=self.repository,
                status=response.status_code,
                detail=f"answered after {self._streamed} of {length} bytes streamed",
            )
        self.location = self._client._location(response, self.location)
        self.offset += length
        self._broken = False

    def commit(self, digest: str) -> str:
        """Finish the blob as ``digest`` and return it; the registry checks the digest
        (a mismatch raises :class:`RegistryContentError`, the session stays open)."""
        self._check_open()
        url = str(httpx.URL(self.location).copy_merge_params({"digest": digest}))
        response = self._client._send(
            "PUT",
            url,
            what="commit blob upload",
            repository=self.repository,
            reference=digest,
            scopes=self._client._push_scopes(self.repository),
            headers={"Content-Type": "application/octet-stream"},
            content=b"",
            expect=(201, 204),
        )
        stored = response.headers.get("docker-content-digest")
        self._closed = True
        if stored and stored != digest:
            raise DigestMismatchError(
                "commit blob upload",
                registry=self._client.url,
                repository=self.repository,
                expected=digest,
                actual=stored,
            )
        return digest

    def cancel(self, *, timeout_s: float | None = None) -> None:
        """Discard the session; a session the registry no longer knows is fine.
        Does nothing once committed or cancelled. ``timeout_s`` overrides the client's
        timeout (a service shutting down waits less)."""
        if self._closed:
            return
        self._client._send(
            "DELETE",
            self.location,
            what="cancel blob upload",
            repository=self.repository,
            scopes=self._client._push_scopes(self.repository),
            expect=(200, 202, 204, 404),
            timeout_s=timeout_s,
        )
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"upload session for {self.repository} is already closed")
        if self._broken:
            raise RuntimeError(
                f"upload session for {self.repository}: a write failed, cancel the session"
            )

    def __enter__(self) -> BlobUpload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._closed:
            self.cancel()


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


class BlobCopier:
    """Copies one blob from a source registry to a target registry in bounded steps.

    Each :meth:`step` streams at most ``max_bytes`` from the source's ``GET`` into one
    ``PATCH`` of an upload session on the target, a read chunk at a time, so a caller
    can move a large blob a few MB per call and :meth:`cancel` between calls; memory
    is a few read chunks whatever the step (when the source announces no size, each
    step is read into memory first). When the source is exhausted the digest of what
    was streamed (and its size, when given) is checked against ``digest`` before the
    upload is committed: a mismatch raises the non-retryable
    :class:`DigestMismatchError` (:class:`RegistryContentError` for the size). Any
    error in a step cancels the copy (source stream closed, target session discarded)
    before it propagates; a cancelled copier cannot be resumed. A step and
    :meth:`cancel` must not run at the same time.
    """

    def __init__(
        self,
        source: RegistryClient,
        source_repository: str,
        target: RegistryClient,
        target_repository: str,
        digest: str,
        *,
        size: int | None = None,
    ) -> None:
        algorithm = digest.split(":", 1)[0]
        if algorithm not in hashlib.algorithms_available:
            raise RegistryContentError(
                "copy blob",
                registry=source.url,
                repository=source_repository,
                reference=digest,
                detail=f"unsupported digest algorithm {algorithm!r}",
            )
        self._algorithm = algorithm
        self.source = source
        self.source_repository = source_repository
        self.target = target
        self.target_repository = target_repository
        self.digest = digest
        #: Expected size in bytes, if known (checked at the end).
        self.size = size
        #: Bytes written to the target so far.
        self.copied = 0
        self._stream: BlobStream | None = None
        self._chunks: Iterator[bytes] | None = None
        self._total: int | None = None  # what the source will send, once known
        self._left = b""  # read from the source, not yet sent (less than a read chunk)
        self._failure: RegistryError | None = None  # what the source did mid-step
        self._upload: BlobUpload | None = None
        self._done = False
        self._cancelled = False

    @property
    def done(self) -> bool:
        """Whether the blob is committed on the target."""
        return self._done

    @property
    def cancelled(self) -> bool:
        """Whether the copy was cancelled (by :meth:`cancel` or a failed step)."""
        return self._cancelled

    @property
    def upload(self) -> BlobUpload | None:
        """The upload session on the target, once the first step opened it."""
        return self._upload

    def step(self, max_bytes: int = DEFAULT_STEP_BYTES) -> bool:
        """Move at most ``max_bytes`` (> 0) and return whether the blob is complete.

        Raises :class:`RegistryError` subclasses (retryable ones for network failures
        and 5xx on either side) and ``RuntimeError`` after :meth:`cancel`.
        """
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if self._done:
            return True
        if self._cancelled:
            raise RuntimeError(f"copy of {self.digest} was cancelled")
        try:
            self._advance(max_bytes)
        except BaseException:
            self.cancel()
            raise
        return self._done

    def run(self, step_bytes: int = DEFAULT_STEP_BYTES) -> None:
        """Copy the whole blob, ``step_bytes`` per request."""
        while not self.step(step_bytes):
            pass

    def cancel(self, *, timeout_s: float | None = None) -> None:
        """Stop the copy: close the source stream and discard the target session
        (``timeout_s`` bounds the ``DELETE``, the client's timeout by default).

        Best effort: a failure to reach the target is logged, not raised. Does nothing
        once the blob is complete.
        """
        if self._done or self._cancelled:
            return
        self._cancelled = True
        self._left = b""
        if self._stream is not None:
            self._stream.close()
        if self._upload is not None:
            try:
                self._upload.cancel(timeout_s=timeout_s)
            except RegistryError as exc:
                logger.debug("could not cancel upload of {}: {}", self.digest, exc)

    def _advance(self, max_bytes: int) -> None:
        if self._upload is None:
            self._upload = self.target.start_upload(
                self.target_repository, algorithm=self._algorithm
            )
        if self._chunks is None:
            self._stream = self.source.open_blob(self.source_repository, self.digest)
            self._chunks = iter(self._stream)
            self._total = self.size if self.size is not None else self._stream.size
        if self._total is None:
            piece = self._read(max_bytes)
            self._upload.write(piece)
            self.copied += len(piece)
            if len(piece) < max_bytes:
                self._finish()
            return
        length = min(max_bytes, self._total - self.copied)
        if length > 0:
            self._upload.write_stream(self._take(length), length)
            if self._failure is not None:
                raise self._failure
            self.copied += length
        if self.copied == self._total:
            self._expect_end()
            self._finish()

    def _take(self, length: int) -> Iterator[bytes]:
        """The next ``length`` bytes of the source, as they are read; what a read chunk
        holds beyond them waits in ``_left`` for the next step. A source that fails or
        ends early is recorded in ``_failure`` and the rest is filler."""
        assert self._chunks is not None
        wanted = length
        while wanted:
            try:
                chunk, self._left = self._left or next(self._chunks, b""), b""
            except RegistryError as exc:
                self._failure = exc
                break
            if not chunk:
                self._failure = self._size_error(self.copied + length - wanted)
                break
            if len(chunk) > wanted:
                chunk, self._left = chunk[:wanted], chunk[wanted:]
            wanted -= len(chunk)
            yield chunk
        # The PATCH is completed with zeros rather than cut short: distribution keeps
        # what a cut PATCH delivered, so the session's size no longer matches the
        # offset in its last Location and it refuses to DELETE the session (404
        # BLOB_UPLOAD_INVALID), leaving it on disk until its purge. The session is
        # cancelled once the PATCH is through.
        while wanted:
            n = min(wanted, len(_FILLER))
            wanted -= n
            yield _FILLER if n == len(_FILLER) else _FILLER[:n]

    def _read(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of the source in memory (short only at its end)."""
        assert self._chunks is not None
        piece = bytearray(self._left)
        self._left = b""
        while len(piece) < max_bytes:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            piece += chunk
        if len(piece) > max_bytes:
            self._left = bytes(piece[max_bytes:])
            del piece[max_bytes:]
        return bytes(piece)

    def _expect_end(self) -> None:
        """Raises when the source has more than the size announced."""
        assert self._chunks is not None
        extra = len(self._left) + len(next(self._chunks, b""))
        if extra:
            raise self._size_error(self.copied + extra, more=True)

    def _size_error(self, read: int, *, more: bool = False) -> RegistryContentError:
        said = "the manifest says" if self.size is not None else "the registry announced"
        return RegistryContentError(
            "copy blob",
            registry=self.source.url,
            repository=self.source_repository,
            reference=self.digest,
            detail=f"read {'more than ' if more else ''}{read} bytes, {said} {self._total}",
        )

    def _finish(self) -> None:
        assert self._upload is not None
        actual = self._upload.digest
        if actual != self.digest:
            raise DigestMismatchError(
                "copy blob",
                registry=self.source.url,
                repository=self.source_repository,
                expected=self.digest,
                actual=actual,
            )
        if self.size is not None and self.copied != self.size:
            raise self._size_error(self.copied)
        self._upload.commit(self.digest)
        self._done = True

    def __enter__(self) -> BlobCopier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(RegistryError):
            self.cancel()
