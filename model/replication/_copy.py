"""One blob copied from the source registry to the target in bounded steps, with the
source read ahead by a reader thread so that reading and uploading overlap."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import deque
from collections.abc import Iterator

from model.errors import RetryableError
from model.registry import (
    BlobStream,
    BlobUpload,
    Descriptor,
    DigestMismatchError,
    RegistryClient,
    RegistryContentError,
    RegistryError,
)
from model.replication._errors import ReplicationError

__all__ = ["BlobCopy", "CopyStalled"]

#: Seconds a cancelled copy waits for its reader thread to let go of the source stream.
READER_JOIN_TIMEOUT_S = 1.0
#: Seconds a reader waits for its consumer to take a piece before it gives up and
#: closes the source stream: bounds what a copy abandoned without :meth:`BlobCopy.cancel`
#: (a service shut down mid-blob) holds. Steps follow each other in milliseconds.
READER_IDLE_TIMEOUT_S = 60.0


class CopyStalled(ReplicationError, RetryableError):
    """A blob copy was not advanced for :data:`READER_IDLE_TIMEOUT_S` and its source
    stream was closed; retryable."""


class _ReadAhead:
    """Reads a blob stream in its own thread into ``buffers`` reusable buffers of
    ``piece_bytes`` each (smaller for a smaller blob), hashing what it reads, so that
    the next pieces are read while one is uploaded. The consumer takes pieces with
    :meth:`take` in another thread; :meth:`close` makes the reader stop. The stream is
    only ever touched by the reader thread, which closes it when it ends. Memory is
    the buffers plus the piece :meth:`take` hands out."""

    def __init__(
        self,
        stream: BlobStream,
        algorithm: str,
        piece_bytes: int,
        buffers: int,
        name: str,
        size_hint: int | None = None,
    ) -> None:
        self._stream = stream
        self._capacity = piece_bytes if size_hint is None else max(1, min(piece_bytes, size_hint))
        self._cond = threading.Condition()
        self._spare: deque[bytearray] = deque()
        self._buffers_left = buffers  # allocated only when needed
        self._ready: deque[tuple[bytearray, int]] = deque()
        self._eof = False
        self._closed = False
        self._error: BaseException | None = None
        self.hash = hashlib.new(algorithm)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """The reader thread."""
        chunks: Iterator[bytes] = iter(self._stream)
        capacity = self._capacity
        buffer: bytearray | None = None
        filled = 0
        try:
            for chunk in chunks:
                self.hash.update(chunk)
                view = memoryview(chunk)
                while view:
                    if buffer is None:
                        buffer, filled = self._empty_buffer(), 0
                        if buffer is None:
                            return
                    n = min(len(view), capacity - filled)
                    buffer[filled : filled + n] = view[:n]
                    filled += n
                    view = view[n:]
                    if filled == capacity:
                        self._hand_over(buffer, filled)
                        buffer = None
            if buffer is not None and filled:
                self._hand_over(buffer, filled)
        except BaseException as exc:
            with self._cond:
                self._error = exc
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # the stream's generator closes the response
            self._stream.close()
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def _empty_buffer(self) -> bytearray | None:
        """A buffer to fill, once one is free; None when closed meanwhile, or when the
        consumer has not come for :data:`READER_IDLE_TIMEOUT_S`."""
        deadline = time.monotonic() + READER_IDLE_TIMEOUT_S
        with self._cond:
            while not self._spare and not self._buffers_left and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._error = CopyStalled(
                        f"blob read abandoned: not advanced for {READER_IDLE_TIMEOUT_S:g} s"
                    )
                    return None
                self._cond.wait(left)
            if self._closed:
                return None
            if self._spare:
                return self._spare.popleft()
            self._buffers_left -= 1
        return bytearray(self._capacity)

    def _hand_over(self, buffer: bytearray, filled: int) -> None:
        with self._cond:
            self._ready.append((buffer, filled))
            self._cond.notify_all()

    def take(self) -> tuple[bytes, bool]:
        """The next piece (blocks until it is read; empty at the end) and whether the
        stream is known to be exhausted after it. Raises what the reader met."""
        with self._cond:
            while not self._ready and not self._eof:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            if not self._ready:
                return b"", True
            buffer, filled = self._ready.popleft()
        piece = memoryview(buffer)[:filled].tobytes()
        with self._cond:
            self._spare.append(buffer)
            self._cond.notify_all()
            return piece, self._eof and not self._ready

    def close(self) -> None:
        """Stops the reader (it closes the stream); waits a little for it."""
        with self._cond:
            self._closed = True
            self._ready.clear()
            self._spare.clear()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(READER_JOIN_TIMEOUT_S)


class BlobCopy:
    """Copies ``blob`` from ``source_repository`` of ``source`` to ``target_repository`` of
    ``target``: an upload session on the target, the source stream read ahead by a
    thread into ``buffers`` buffers of ``step_bytes`` (so the next pieces are read while
    one uploads), and :meth:`step` appending one piece, at most ``step_bytes``, per
    call (one ``PATCH``); memory is at most ``buffers + 1`` pieces. When the source is
    exhausted the digest and size of what was read are checked before the blob is
    committed: a mismatch raises the non-retryable :class:`DigestMismatchError` /
    :class:`RegistryContentError`.

    An error in a step cancels the copy (reader stopped, session deleted) before it
    propagates; :meth:`cancel` does the same on request and is idempotent. A step and
    :meth:`cancel` must not run at the same time.
    """

    def __init__(
        self,
        source: RegistryClient,
        source_repository: str,
        target: RegistryClient,
        target_repository: str,
        blob: Descriptor,
        *,
        step_bytes: int,
        buffers: int = 2,
    ) -> None:
        if step_bytes <= 0 or buffers <= 0:
            raise ValueError("step_bytes and buffers must be positive")
        self.source = source
        self.source_repository = source_repository
        self.target = target
        self.target_repository = target_repository
        self.blob = blob
        self.step_bytes = step_bytes
        self.buffers = buffers
        #: Bytes written to the target so far.
        self.copied = 0
        self.done = False
        self.cancelled = False
        self._algorithm = blob.digest.split(":", 1)[0]
        if self._algorithm not in hashlib.algorithms_available:
            raise RegistryContentError(
                "copy blob",
                registry=source.url,
                repository=source_repository,
                reference=blob.digest,
                detail=f"unsupported digest algorithm {self._algorithm!r}",
            )
        self._upload: BlobUpload | None = None
        self._reader: _ReadAhead | None = None

    def step(self) -> bool:
        """Moves at most ``step_bytes``; returns whether the blob is committed. Raises
        :class:`RegistryError` subclasses (retryable ones for network failures and 5xx
        on either side), ``RuntimeError`` after :meth:`cancel`."""
        if self.done:
            return True
        if self.cancelled:
            raise RuntimeError(f"copy of {self.blob.digest} was cancelled")
        try:
            self._advance()
        except BaseException:
            self.cancel()
            raise
        return self.done

    def cancel(self) -> None:
        """Stops the reader and deletes the upload session (best effort: a target that
        cannot be reached is not an error here). Does nothing once committed."""
        if self.done or self.cancelled:
            return
        self.cancelled = True
        if self._reader is not None:
            self._reader.close()
        if self._upload is not None:
            # Best effort: the registry drops stale sessions itself.
            with contextlib.suppress(RegistryError):
                self._upload.cancel()

    def _advance(self) -> None:
        if self._upload is None:
            self._upload = self.target.start_upload(self.target_repository)
        if self._reader is None:
            stream = self.source.open_blob(self.source_repository, self.blob.digest)
            self._reader = _ReadAhead(
                stream,
                self._algorithm,
                self.step_bytes,
                self.buffers,
                f"blob-reader-{self.blob.digest[7:19]}",
                self.blob.size,
            )
        piece, exhausted = self._reader.take()
        if piece:
            self._upload.write(piece)
            self.copied += len(piece)
        if exhausted:
            self._finish(self._upload, self._reader)

    def _finish(self, upload: BlobUpload, reader: _ReadAhead) -> None:
        actual = f"{self._algorithm}:{reader.hash.hexdigest()}"
        if actual != self.blob.digest:
            raise DigestMismatchError(
                "copy blob",
                registry=self.source.url,
                repository=self.source_repository,
                expected=self.blob.digest,
                actual=actual,
            )
        if self.copied != self.blob.size:
            raise RegistryContentError(
                "copy blob",
                registry=self.source.url,
                repository=self.source_repository,
                reference=self.blob.digest,
                detail=f"read {self.copied} bytes, the manifest says {self.blob.size}",
            )
        upload.commit(self.blob.digest)
        self.done = True
