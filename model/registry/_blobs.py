"""Blob transfer: an upload session on the target, a streamed download from the source,
and a copier that moves one blob between them in bounded steps."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
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


class BlobUpload:
    """One upload session on a registry (``POST …/blobs/uploads/``), made by
    :meth:`RegistryClient.start_upload`.

    :meth:`write` appends a chunk (``PATCH``), :meth:`commit` finishes the blob under
    its digest (``PUT ?digest=``), :meth:`cancel` discards the session (``DELETE``).
    Each answer carries the session's next ``Location``, which the next request must
    use: an older one is refused. Used as a context manager, a session that was not
    committed is cancelled on exit. Not thread-safe.
    """

    def __init__(self, client: RegistryClient, repository: str, location: str) -> None:
        self._client = client
        self.repository = repository
        #: The URL of the session as of the last answer.
        self.location = location
        #: Bytes written so far.
        self.offset = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether the session was committed or cancelled."""
        return self._closed

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` to the blob. Raises :class:`RegistryError` (retryable for
        network failures and 5xx) and :class:`RegistryNotFoundError` for a lost session."""
        self._check_open()
        if not chunk:
            return
        end = self.offset + len(chunk) - 1
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
            content=chunk,
            expect=(202, 204),
        )
        self.location = self._client._location(response, self.location)
        self.offset += len(chunk)

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

    def cancel(self) -> None:
        """Discard the session; a session the registry no longer knows is fine.
        Does nothing once committed or cancelled."""
        if self._closed:
            return
        self._client._send(
            "DELETE",
            self.location,
            what="cancel blob upload",
            repository=self.repository,
            scopes=self._client._push_scopes(self.repository),
            expect=(200, 202, 204, 404),
        )
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"upload session for {self.repository} is already closed")

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

    Each :meth:`step` reads at most ``max_bytes`` from the source stream and appends
    them to an upload session on the target, so a caller can move a large blob a few
    MB per call and :meth:`cancel` between calls. When the source is exhausted the
    bytes' digest (and size, when given) is checked against ``digest`` before the
    upload is committed: a mismatch raises the non-retryable
    :class:`DigestMismatchError`. Any error in a step cancels the copy (source stream
    closed, target session discarded) before it propagates; a cancelled copier cannot
    be resumed. Memory use is bounded by ``max_bytes`` plus one read chunk.
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
        try:
            self._hash = hashlib.new(algorithm)
        except ValueError:
            raise RegistryContentError(
                "copy blob",
                registry=source.url,
                repository=source_repository,
                reference=digest,
                detail=f"unsupported digest algorithm {algorithm!r}",
            ) from None
        self._source = source
        self._source_repository = source_repository
        self._target = target
        self._target_repository = target_repository
        self.digest = digest
        #: Expected size in bytes, if known (checked at the end).
        self.size = size
        #: Bytes written to the target so far.
        self.copied = 0
        self._stream: BlobStream | None = None
        self._chunks: Iterator[bytes] | None = None
        self._upload: BlobUpload | None = None
        self._pending = bytearray()
        self._eof = False
        self._done = False
        self._cancelled = False

    @property
    def done(self) -> bool:
        """Whether the blob is committed on the target."""
        return self._done

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

    def cancel(self) -> None:
        """Stop the copy: close the source stream and discard the target session.

        Best effort: a failure to reach the target is logged, not raised. Does nothing
        once the blob is complete.
        """
        if self._done or self._cancelled:
            return
        self._cancelled = True
        if self._stream is not None:
            self._stream.close()
        if self._upload is not None:
            try:
                self._upload.cancel()
            except RegistryError as exc:
                logger.debug("could not cancel upload of {}: {}", self.digest, exc)

    def _advance(self, max_bytes: int) -> None:
        if self._upload is None:
            self._upload = self._target.start_upload(self._target_repository)
        if self._chunks is None:
            self._stream = self._source.open_blob(self._source_repository, self.digest)
            self._chunks = iter(self._stream)
        pending = self._pending
        while len(pending) < max_bytes and not self._eof:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._eof = True
            else:
                pending += chunk
        with memoryview(pending) as view:
            piece = bytes(view[:max_bytes])
        del pending[:max_bytes]
        if piece:
            self._hash.update(piece)
            self._upload.write(piece)
            self.copied += len(piece)
        if self._eof and not pending:
            self._finish()

    def _finish(self) -> None:
        assert self._upload is not None
        actual = f"{self.digest.split(':', 1)[0]}:{self._hash.hexdigest()}"
        if actual != self.digest:
            raise DigestMismatchError(
                "copy blob",
                registry=self._source.url,
                repository=self._source_repository,
                expected=self.digest,
                actual=actual,
            )
        if self.size is not None and self.copied != self.size:
            raise RegistryContentError(
                "copy blob",
                registry=self._source.url,
                repository=self._source_repository,
                reference=self.digest,
                detail=f"read {self.copied} bytes, the manifest says {self.size}",
            )
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
