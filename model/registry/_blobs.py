"""Blob transfer: an upload session on the target, a streamed download from the source,
and a copier that moves one blob between them in bounded steps, resuming what a fault
broke off instead of starting over."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import httpx
from loguru import logger

from model.errors import StopRequested
from model.registry._errors import (
    DigestMismatchError,
    RegistryAuthExpiredError,
    RegistryContentError,
    RegistryError,
    RegistryNotFoundError,
    RegistryUnavailableError,
    error_from_transport,
)
from model.registry._retry import DEFAULT_RETRY, RetryPolicy, check_stop, pause, retrying

if TYPE_CHECKING:
    from model.registry._client import RegistryClient

__all__ = [
    "DEFAULT_STEP_BYTES",
    "MAX_BLOB_RESTARTS",
    "MAX_SOURCE_REOPENS",
    "BlobCopier",
    "BlobStream",
    "BlobUpload",
]

_T = TypeVar("_T")

#: Bytes a :class:`BlobCopier` moves per step unless told otherwise (one PATCH each).
DEFAULT_STEP_BYTES = 4 * 1024 * 1024
#: Size of the reads from a source blob stream.
READ_CHUNK_BYTES = 64 * 1024
#: What completes a streamed PATCH whose source failed mid-step (see ``BlobCopier._take``).
_FILLER = bytes(READ_CHUNK_BYTES)
#: Times a :class:`BlobCopier` starts a blob's upload over (a session the registry lost
#: or refused, bytes that hash to another digest) before it gives up.
MAX_BLOB_RESTARTS = 4
#: Times the source's ``GET`` of one blob is sent again (with ``Range``) before a copy
#: gives up, however much each answer moved.
MAX_SOURCE_REOPENS = 50

_RANGE_RE = re.compile(r"^(?:bytes=)?0-(\d+)$")
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def _held(range_header: str | None, expected: int) -> int | None:
    """Bytes an upload session holds from its ``Range: 0-<last>`` header (``None`` when
    absent or malformed). Distribution answers ``0-0`` for 0 bytes and for 1, so that
    one is read as ``expected`` when that is 0 or 1."""
    match = _RANGE_RE.match((range_header or "").strip())
    if match is None:
        return None
    last = int(match.group(1))
    if last == 0:
        return expected if expected in (0, 1) else 0
    return last + 1


class BlobUpload:
    """One upload session on a registry (``POST …/blobs/uploads/``), made by
    :meth:`RegistryClient.start_upload`.

    :meth:`write` appends a chunk held in memory and :meth:`write_stream` one streamed
    from an iterator (one ``PATCH`` each), :meth:`commit` finishes the blob under its
    digest (``PUT ?digest=``), :meth:`cancel` discards the session (``DELETE``). Each
    answer carries the session's next ``Location``, which the next request must use:
    an older one is refused. What is written is hashed with ``algorithm`` on the way
    (:attr:`digest`). A write that failed leaves the session in an unknown state until
    :meth:`status` asks the registry what it holds and :meth:`resume` takes that as the
    new offset; only :meth:`cancel` is allowed in between. Used as a context manager, a
    session that was not committed is cancelled on exit. Not thread-safe.
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
        # None once a resume made the hash of the held bytes unknown (the registry
        # checks the digest at commit anyway).
        self._hash: hashlib._Hash | None = hashlib.new(algorithm)
        self._hashed = 0  # bytes fed to _hash
        self._mark: tuple[int, hashlib._Hash | None] = (0, None)  # before the last write
        self._closed = False
        self._broken = False
        self._streamed = 0  # bytes of the current streamed write handed to the request

    @property
    def closed(self) -> bool:
        """Whether the session was committed or cancelled."""
        return self._closed

    @property
    def hashed(self) -> bool:
        """Whether :attr:`digest` is known (a :meth:`resume` at an offset other than
        where the failed write began or ended loses it)."""
        return self._hash is not None

    @property
    def digest(self) -> str:
        """``algorithm:hex`` of the bytes written so far; ``RuntimeError`` when not
        :attr:`hashed`."""
        if self._hash is None:
            raise RuntimeError(f"upload session for {self.repository}: digest unknown")
        return f"{self._algorithm}:{self._hash.hexdigest()}"

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` to the blob. Raises :class:`RegistryError` (retryable for
        network failures and 5xx) and :class:`RegistryNotFoundError` for a lost session."""
        self._check_open()
        if not chunk:
            return
        self._begin_write()
        self._hash_update(chunk)
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
        self._begin_write()
        self._streamed = 0
        self._patch(self._hashing(chunks, length), length)

    def status(self) -> int:
        """Bytes the registry holds in this session (``GET`` on its location, whose
        answer also gives the next location). Raises :class:`RegistryNotFoundError`
        when the registry no longer knows the session, or refuses its location as
        stale: distribution 2.8 keeps what a cut ``PATCH`` delivered and then refuses
        every location it gave before, so such a session is lost."""
        if self._closed:
            raise RuntimeError(f"upload session for {self.repository} is already closed")
        response = self._client._send(
            "GET",
            self.location,
            what="check blob upload",
            repository=self.repository,
            scopes=self._client._push_scopes(self.repository),
            expect=(204,),
        )
        held = _held(response.headers.get("range"), self.offset)
        if held is None:
            raise RegistryError(
                "check blob upload",
                registry=self._client.url,
                repository=self.repository,
                status=response.status_code,
                detail=f"no usable Range header ({response.headers.get('range')!r})",
            )
        self.location = self._client._location(response, self.location)
        return held

    def resume(self, offset: int) -> None:
        """After a failed write, takes ``offset`` (what :meth:`status` reported) as the
        session's size and allows writes again. The digest stays known when ``offset``
        is where the failed write began or where its hashed bytes ended."""
        if self._closed:
            raise RuntimeError(f"upload session for {self.repository} is already closed")
        start, before = self._mark
        if offset == self._hashed:
            pass  # every hashed byte landed
        elif offset == start and before is not None:
            self._hash, self._hashed = before, start
        else:
            self._hash, self._hashed = None, offset
        self.offset = offset
        self._broken = False

    def _begin_write(self) -> None:
        self._mark = (self.offset, self._hash.copy() if self._hash is not None else None)

    def _hash_update(self, chunk: bytes) -> None:
        if self._hash is not None:
            self._hash.update(chunk)
        self._hashed += len(chunk)

    def _hashing(self, chunks: Iterable[bytes], length: int) -> Iterator[bytes]:
        """``chunks``, hashed as they go by (counted in ``_streamed``), checked to add up
        to ``length``."""
        for chunk in chunks:
            self._streamed += len(chunk)
            if self._streamed > length:
                raise ValueError(f"chunks gave more than the {length} bytes announced")
            self._hash_update(chunk)
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


class _SourceReader:
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
        client: RegistryClient,
        repository: str,
        digest: str,
        size: int | None,
        policy: RetryPolicy,
    ) -> None:
        self.client = client
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
                registry=self.client.url,
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
        response = self.client._send(
            "GET",
            f"/v2/{self.repository}/blobs/{self.digest}",
            what="get blob",
            repository=self.repository,
            reference=self.digest,
            scopes=self.client._pull_scopes(self.repository),
            headers=headers,
            expect=(200, 206) if "Range" in headers else (200,),
            stream=True,
            follow_redirects=True,
        )
        stream = BlobStream(
            response, registry=self.client.url, repository=self.repository, digest=self.digest
        )
        chunks = iter(stream)
        if response.status_code == 206:
            match = _CONTENT_RANGE_RE.match(response.headers.get("content-range", "").strip())
            if match is None or int(match.group(1)) != self.position:
                stream.close()
                raise RegistryContentError(
                    "get blob",
                    registry=self.client.url,
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


class BlobCopier:
    """Copies one blob from a source registry to a target registry in bounded steps.

    Each :meth:`step` streams at most ``max_bytes`` from the source's ``GET`` into one
    ``PATCH`` of an upload session on the target, a read chunk at a time, so a caller
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
        self._reader = _SourceReader(source, source_repository, digest, size, policy)
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
        length = min(max_bytes, total - self.copied)
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
        return self._upload._streamed if self._upload is not None else 0

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
                self._upload._closed = True
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
