"""Copying one blob between two registries in bounded steps, resuming what a fault broke
off (on either side) instead of starting over."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from loguru import logger

from model.errors import StopRequested
from model.registry._errors import (
    DigestMismatchError,
    RegistryAuthExpiredError,
    RegistryContentError,
    RegistryError,
    RegistryNotFoundError,
    RegistryUnavailableError,
)
from model.registry._retry import DEFAULT_RETRY, RetryPolicy, check_stop, pause, retrying
from model.registry._stream import READ_CHUNK_BYTES, SourceReader
from model.registry._upload import BlobUpload

if TYPE_CHECKING:
    from model.registry._client import RegistryClient

__all__ = ["DEFAULT_STEP_BYTES", "MAX_BLOB_RESTARTS", "BlobCopier"]

_T = TypeVar("_T")

#: Bytes a :class:`BlobCopier` moves per step unless told otherwise (one PATCH each).
DEFAULT_STEP_BYTES = 4 * 1024 * 1024
#: What completes a streamed PATCH whose source failed mid-step (see ``BlobCopier._take``).
_FILLER = bytes(READ_CHUNK_BYTES)
#: Times a :class:`BlobCopier` starts a blob's upload over (a session the registry lost
#: or refused, bytes that hash to another digest) before it gives up.
MAX_BLOB_RESTARTS = 4


def _balanced(left: int, max_bytes: int) -> int:
    """The size of the next ``PATCH`` for ``left`` bytes still to send, at most
    ``max_bytes``: the fewest ``PATCH``es the bound allows, of equal size.

    Distribution 2.8 cancels a session once a ``PATCH`` is cut mid-body (what it
    delivered no longer matches the offset of any location the client holds), so a
    cut costs all the session held; a 500 costs the body it refused. Each ``PATCH`` is
    a chance of either, so a blob takes as few as it can; and as many bytes ride on
    the last ``PATCH`` as on the others, rather than a short tail risking a whole
    session for a few bytes of progress (100 MiB in 32 MiB steps: 4 x 25 MiB, not
    3 x 32 + 4).
    """
    if left <= 0:
        return 0
    count = -(-left // max_bytes)
    return -(-left // count)


class BlobCopier:
    """Copies one blob from a source registry to a target registry in bounded steps.

    Each :meth:`step` streams at most ``max_bytes`` from the source's ``GET`` into one
    ``PATCH`` of an upload session on the target (the rest of the blob split evenly
    into as few ``PATCH``es as ``max_bytes`` allows), a read chunk at a time, so a caller
    can move a large blob a few MB per call and :meth:`cancel` between calls; memory
    is a few read chunks whatever the step (when the source announces no size, each
    step is read into memory first).

    Faults are survived inside the step, each try after a wait of ``policy``:

    - the source's answer breaks off or fails: it is asked again from the byte the
      copy reached (``Range``), the ``PATCH`` under way waiting meanwhile;
    - the ``PATCH`` fails: the registry is asked what the session holds
      (:meth:`BlobUpload.status`) and the step resumes from there; a session the
      registry lost or refuses (404: distribution 2.8 refuses every earlier location
      once a cut ``PATCH`` delivered part of its body) is started over;
    - the bytes do not hash to ``digest`` (checked here as they stream, and by the
      registry at the final ``PUT``): the blob is sent again from its first byte.

    At most :data:`MAX_BLOB_RESTARTS` restarts, and ``policy.attempts`` tries in a row
    that move nothing; then the last failure is raised: the retryable
    :class:`RegistryUnavailableError` for network failures and 5xx on either side, the
    non-retryable :class:`DigestMismatchError` for content that never matched its
    digest, :class:`RegistryContentError` for a size other than the manifest's. Any
    error cancels the copy (source stream closed, target session discarded) before it
    propagates; a cancelled copier cannot be resumed. A step and :meth:`cancel` must
    not run at the same time.
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
        policy: RetryPolicy = DEFAULT_RETRY,
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
        self.policy = policy
        #: Bytes the target's session holds (what the next step starts from).
        self.copied = 0
        #: Bytes handed to the target so far, those of failed tries included.
        self.sent = 0
        #: Times the upload was started over.
        self.restarts = 0
        #: Tries the copy resumed after a fault (either side).
        self.resumes = 0
        self._reader = SourceReader(source.session, source_repository, digest, size, policy)
        self._left = b""  # read from the source, not yet sent (less than a read chunk)
        # What the source did (its tries spent), or a stop that came while reading it.
        self._failure: RegistryError | StopRequested | None = None
        self._source_ended = False  # the source was read to its end and checked
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

    @property
    def source_reopens(self) -> int:
        """Times the source's answer broke off and was asked for again."""
        return self._reader.reopens

    def step(self, max_bytes: int = DEFAULT_STEP_BYTES) -> bool:
        """Move at most ``max_bytes`` (> 0) and return whether the blob is complete.

        Raises :class:`RegistryError` subclasses (see the class), ``RuntimeError``
        after :meth:`cancel`, :class:`~model.errors.StopRequested` when a stop of the
        calling worker's job comes first.
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
        self._reader.close()
        if self._upload is not None:
            self._discard(self._upload, timeout_s)

    def _discard(self, upload: BlobUpload, timeout_s: float | None = None) -> None:
        try:
            upload.cancel(timeout_s=timeout_s)
        except RegistryError as exc:
            logger.debug("could not cancel upload of {}: {}", self.digest, exc)

    # -- one step, and what a fault in it leads to --------------------------------------

    def _advance(self, max_bytes: int) -> None:
        failures = 0
        while not self._done:  # a lost commit answer may turn out to be a success
            try:
                self._try_step(max_bytes)
                return
            except (
                RegistryUnavailableError,
                RegistryAuthExpiredError,
                RegistryNotFoundError,
                RegistryContentError,
            ) as exc:
                if self._failure is not None:
                    raise self._failure from None  # the source's own tries are spent
                if self._upload is None:
                    raise  # no session could be opened, after tries of its own
                if isinstance(exc, RegistryContentError) and not self._restartable(exc):
                    raise
                failures += 1
                self._recover(exc, failures)

    def _try_step(self, max_bytes: int) -> None:
        """One try of a step: at most one ``PATCH``, and the commit once all is sent."""
        if self._upload is None:
            self._upload = retrying(
                lambda: self.target.start_upload(self.target_repository, algorithm=self._algorithm),
                self.policy,
            )
        total = self._from_source(self._reader.size)
        if total is None:
            self._write_piece(max_bytes)
            return
        length = _balanced(total - self.copied, max_bytes)
        if length > 0:
            start = self.sent
            try:
                self._upload.write_stream(self._take(length), length)
            finally:
                self.sent = start + self._upload_streamed()
            if self._failure is not None:
                raise self._failure
            self.copied += length
        if self.copied == total:
            if not self._source_ended:
                self._expect_end()
                self._source_ended = True
            self._finish()

    def _from_source(self, read: Callable[[], _T]) -> _T:
        """``read()`` of the source reader; a failure (its tries spent) is kept in
        ``_failure``, so that it is raised as it is rather than handled as the target's."""
        try:
            return read()
        except RegistryError as exc:
            self._failure = exc
            raise

    def _upload_streamed(self) -> int:
        return self._upload.streamed if self._upload is not None else 0

    def _write_piece(self, max_bytes: int) -> None:
        """A step of a blob of unknown size: read into memory, then one ``PATCH``."""
        assert self._upload is not None
        piece = self._read(max_bytes)
        self.sent += len(piece)
        self._upload.write(piece)
        self.copied += len(piece)
        if len(piece) < max_bytes:
            self._finish()

    def _restartable(self, exc: RegistryContentError) -> bool:
        """Whether content the registry or this copier refused may pass when sent again
        (a byte flipped on the way), rather than being wrong at its source (a size
        other than the manifest's)."""
        return isinstance(exc, DigestMismatchError) or exc.code == "DIGEST_INVALID"

    def _recover(self, exc: RegistryError, failures: int) -> None:
        """After a failed try: waits, then resumes the session where the registry stands
        or starts the blob over; raises ``exc`` when the tries or restarts are spent."""
        check_stop()
        upload = self._upload
        if upload is None or isinstance(exc, (RegistryContentError, RegistryNotFoundError)):
            # Bytes that hashed wrong, or a stale location: the session is of no use.
            self._restart(exc)
            return
        delay = self.policy.delay_s(failures, getattr(exc, "retry_after", None))
        if delay is None:
            raise exc
        logger.debug(
            "blob {}: {} failed at byte {} ({}), resuming in {:.1f} s",
            self.digest,
            exc.what,
            self.copied,
            exc,
            delay,
        )
        pause(delay)
        if upload.closed:  # the commit went through but its answer was lost
            self._committed_or_restart(exc)
            return
        try:
            held = retrying(upload.status, self.policy)
        except RegistryNotFoundError:
            if exc.what == "commit blob upload":
                self._committed_or_restart(exc)
            else:
                self._restart(exc)
            return
        upload.resume(held)
        self.resumes += 1
        if held != self.copied:
            logger.debug("blob {}: the target holds {} bytes", self.digest, held)
        self.copied = held
        self._left = b""
        if not (self._source_ended and held == self._reader.position):
            self._source_ended = False
            self._reader.seek(held)

    def _committed_or_restart(self, exc: RegistryError) -> None:
        """A commit whose answer was lost: done when the target has the blob."""
        if retrying(
            lambda: self.target.blob_exists(self.target_repository, self.digest), self.policy
        ):
            if self._upload is not None:
                self._upload.found_committed()
            self._done = True
            self._reader.close()
            return
        self._restart(exc)

    def _restart(self, exc: RegistryError) -> None:
        """Starts the blob's upload over (a new session, the source from its first
        byte); raises ``exc`` once :data:`MAX_BLOB_RESTARTS` are spent."""
        if self.restarts >= MAX_BLOB_RESTARTS:
            raise exc
        self.restarts += 1
        logger.debug(
            "blob {}: upload started over after {} bytes ({})", self.digest, self.copied, exc
        )
        upload, self._upload = self._upload, None
        if upload is not None:
            self._discard(upload)
        self.copied = 0
        self._left = b""
        self._source_ended = False
        self._reader.seek(0)

    # -- moving bytes ------------------------------------------------------------------

    def _take(self, length: int) -> Iterator[bytes]:
        """The next ``length`` bytes of the source, as they are read; what a read chunk
        holds beyond them waits in ``_left`` for the next step. A source that fails
        beyond its tries or ends early is recorded in ``_failure`` and the rest is
        filler."""
        wanted = length
        while wanted:
            try:
                chunk, self._left = self._left or self._reader.read(), b""
            except (RegistryError, StopRequested) as exc:
                # A stop too: the PATCH is completed (within the grace a stop gives a
                # streamed body), so that its session can still be cancelled.
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
        piece = bytearray(self._left)
        self._left = b""
        while len(piece) < max_bytes:
            chunk = self._from_source(self._reader.read)
            if not chunk:
                break
            piece += chunk
        if len(piece) > max_bytes:
            self._left = bytes(piece[max_bytes:])
            del piece[max_bytes:]
        return bytes(piece)

    def _expect_end(self) -> None:
        """Raises when the source has more than the size announced."""
        extra = len(self._left) + len(self._from_source(self._reader.read))
        if extra:
            raise self._size_error(self.copied + extra, more=True)

    def _size_error(self, read: int, *, more: bool = False) -> RegistryContentError:
        said = "the manifest says" if self.size is not None else "the registry announced"
        return RegistryContentError(
            "copy blob",
            registry=self.source.url,
            repository=self.source_repository,
            reference=self.digest,
            detail=f"read {'more than ' if more else ''}{read} bytes, {said} {self._reader.total}",
        )

    def _finish(self) -> None:
        assert self._upload is not None
        if self._upload.hashed:
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
        self._reader.close()

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
