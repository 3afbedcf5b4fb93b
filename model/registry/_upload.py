"""An upload session on a registry: a blob written in chunks, each answer giving the
session's next address, hashed on the way; resumed at what the registry holds after a
failed write."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from types import TracebackType

import httpx

from model.registry._errors import DigestMismatchError, RegistryError
from model.registry._session import Request, Session, push_scopes, resolve_location

__all__ = ["BlobUpload"]

_RANGE_RE = re.compile(r"^(?:bytes=)?0-(\d+)$")


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
        self, session: Session, repository: str, location: str, *, algorithm: str = "sha256"
    ) -> None:
        self._session = session
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
    def streamed(self) -> int:
        """Bytes of the last streamed write handed to its request so far."""
        return self._streamed

    def found_committed(self) -> None:
        """Takes the session as committed: its commit's answer was lost, and the blob
        turned out to be in the repository."""
        self._closed = True

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
        response = self._session.send(
            Request(
                "GET",
                self.location,
                what="check blob upload",
                repository=self.repository,
                scopes=push_scopes(self.repository),
                expect=(204,),
            )
        )
        held = _held(response.headers.get("range"), self.offset)
        if held is None:
            raise RegistryError(
                "check blob upload",
                registry=self._session.url,
                repository=self.repository,
                status=response.status_code,
                detail=f"no usable Range header ({response.headers.get('range')!r})",
            )
        self.location = resolve_location(response, self.location)
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
        response = self._session.send(
            Request(
                "PATCH",
                self.location,
                what="upload blob chunk",
                repository=self.repository,
                scopes=push_scopes(self.repository),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{self.offset}-{end}",
                },
                content=content,
                content_length=length,
                expect=(202, 204),
            )
        )
        if not isinstance(content, bytes) and self._streamed != length:
            # The registry answered before the body was through: its offset is unknown.
            raise RegistryError(
                "upload blob chunk",
                registry=self._session.url,
                repository=self.repository,
                status=response.status_code,
                detail=f"answered after {self._streamed} of {length} bytes streamed",
            )
        self.location = resolve_location(response, self.location)
        self.offset += length
        self._broken = False

    def commit(self, digest: str) -> str:
        """Finish the blob as ``digest`` and return it; the registry checks the digest
        (a mismatch raises :class:`RegistryContentError`, the session stays open)."""
        self._check_open()
        url = str(httpx.URL(self.location).copy_merge_params({"digest": digest}))
        response = self._session.send(
            Request(
                "PUT",
                url,
                what="commit blob upload",
                repository=self.repository,
                reference=digest,
                scopes=push_scopes(self.repository),
                headers={"Content-Type": "application/octet-stream"},
                content=b"",
                expect=(201, 204),
            )
        )
        stored = response.headers.get("docker-content-digest")
        self._closed = True
        if stored and stored != digest:
            raise DigestMismatchError(
                "commit blob upload",
                registry=self._session.url,
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
        self._session.send(
            Request(
                "DELETE",
                self.location,
                what="cancel blob upload",
                repository=self.repository,
                scopes=push_scopes(self.repository),
                expect=(200, 202, 204, 404),
                timeout_s=timeout_s,
            )
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
