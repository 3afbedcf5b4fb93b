"""The registry client: one object per registry and set of credentials."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from types import TracebackType

import httpx

from model.net import http_client, ssl_context, timeouts
from model.registry._auth import Authenticator
from model.registry._errors import (
    DigestMismatchError,
    InvalidManifestError,
    RegistryAuthError,
    RegistryError,
)
from model.registry._manifest import (
    ACCEPT_MANIFESTS,
    Manifest,
    compute_digest,
    is_digest,
)
from model.registry._session import (
    Request,
    Session,
    delete_scopes,
    pull_scopes,
    push_scopes,
    resolve_location,
)
from model.registry._stream import BlobStream
from model.registry._upload import BlobUpload

__all__ = ["DEFAULT_TIMEOUT_S", "RegistryClient"]

#: Seconds a request may wait for a connection or for the next bytes of an answer, where
#: no settings say otherwise (library use).
DEFAULT_TIMEOUT_S = 30.0
#: Repositories asked for per ``_catalog`` page.
CATALOG_PAGE_SIZE = 100

_LINK_NEXT_RE = re.compile(r'<([^>]+)>\s*;\s*(?:[^,]*;\s*)*rel="?next"?')


def _normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "https://" + url
    return url


def _strings(value: object) -> list[str]:
    """The strings of a JSON list (``null`` and other values give none)."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


class RegistryClient:
    """A client of one registry (Docker Registry HTTP API v2 / OCI distribution).

    ``url`` is the registry's base URL (``https://`` assumed without a scheme);
    ``username`` and ``password`` are sent as Basic credentials, to the registry or to
    its token server, only when the registry asks. TLS certificates are verified
    unless ``insecure``. Manifests travel as raw bytes with their media type, so their
    digests are preserved. ``timeout_s`` bounds each wait for the next bytes of an
    answer (and for the registry to take more of a request body), ``connect_timeout_s``
    (``timeout_s`` when None) each connect. Requests go through
    :class:`model.net.Transport` (unless ``transport`` replaces it), so a stop of the
    calling worker's job cuts a blocked request short.

    Every method raises a :class:`RegistryError` subclass on failure: the retryable
    :class:`RegistryUnavailableError` for network failures, 5xx and 429;
    :class:`RegistryAuthError` for 401/403; :class:`RegistryNotFoundError` for 404
    where absence is not an answer; :class:`RegistryContentError` for invalid content;
    :class:`RegistryStopRequested` for a request cut short or refused by a stop.
    Thread-safe for concurrent requests; close it (or use it as a context manager)
    to release its connections.
    """

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        insecure: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = _normalize_url(url)
        self.username = username
        self.insecure = insecure
        self._http = http_client(
            timeout=timeouts(
                timeout_s if connect_timeout_s is None else connect_timeout_s, timeout_s
            ),
            verify=ssl_context(not insecure),
            transport=transport,
            headers={"User-Agent": "jobservice"},
        )
        self._auth = Authenticator(self._http, self.url, username, password)
        #: What this client and its upload sessions and blob reads send through.
        self.session = Session(self.url, self._http, self._auth)

    def __repr__(self) -> str:
        return f"RegistryClient({self.url!r}, username={self.username!r})"

    @property
    def tokens_fetched(self) -> int:
        """Bearer tokens fetched from the token server so far."""
        return self._auth.tokens_fetched

    def close(self) -> None:
        """Close the connections; the client cannot be used afterwards."""
        self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- registry ---------------------------------------------------------------

    def ping(self) -> None:
        """Check that the registry speaks API v2 and accepts the credentials
        (``GET /v2/``)."""
        self.session.send(Request("GET", "/v2/", what="ping", scopes=frozenset(), expect=(200,)))

    def catalog(
        self, prefix: str | None = None, *, page_size: int = CATALOG_PAGE_SIZE
    ) -> list[str]:
        """Names of all repositories (``_catalog``, ``page_size`` per page, following
        ``Link``), sorted, only those starting with ``prefix`` when given."""
        names: list[str] = []
        for page in self._pages(
            "/v2/_catalog",
            params={"n": str(page_size)},
            what="list repositories",
            repository=None,
            scopes=frozenset({"registry:catalog:*"}),
        ):
            names.extend(_strings(page.get("repositories")))
        if prefix:
            names = [n for n in names if n.startswith(prefix)]
        return sorted(set(names))

    def can_push(self, repository: str) -> bool:
        """Whether the credentials may push to ``repository``: opens an upload session
        and cancels it. ``False`` when the registry answers 401 or 403."""
        try:
            self.start_upload(repository).cancel()
        except RegistryAuthError:
            return False
        return True

    # -- tags and manifests -----------------------------------------------------

    def list_tags(self, repository: str) -> list[str]:
        """Tags of ``repository``, sorted (follows ``Link`` pagination when offered).

        Raises :class:`RegistryNotFoundError` for an unknown repository.
        """
        tags: list[str] = []
        for page in self._pages(
            f"/v2/{repository}/tags/list",
            params=None,
            what="list tags",
            repository=repository,
            scopes=pull_scopes(repository),
        ):
            tags.extend(_strings(page.get("tags")))
        return sorted(set(tags))

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """Digest of the manifest a tag or digest names (``HEAD``), ``None`` if absent."""
        response = self.session.send(
            Request(
                "HEAD",
                f"/v2/{repository}/manifests/{reference}",
                what="check manifest",
                repository=repository,
                reference=reference,
                scopes=pull_scopes(repository),
                headers={"Accept": ACCEPT_MANIFESTS},
                expect=(200, 404),
            )
        )
        if response.status_code == 404:
            return None
        digest = response.headers.get("docker-content-digest")
        if digest:
            return digest
        if is_digest(reference):
            return reference
        return self.get_manifest(repository, reference).digest

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest a tag or digest names, as raw bytes with its media type.

        Raises :class:`RegistryNotFoundError` when absent, :class:`InvalidManifestError`
        for content that is no manifest, :class:`DigestMismatchError` when the bytes do
        not hash to the digest asked for (or the one the registry announced).
        """
        response = self.session.send(
            Request(
                "GET",
                f"/v2/{repository}/manifests/{reference}",
                what="get manifest",
                repository=repository,
                reference=reference,
                scopes=pull_scopes(repository),
                headers={"Accept": ACCEPT_MANIFESTS},
                expect=(200,),
            )
        )
        content = response.content
        try:
            manifest = Manifest.parse(content, response.headers.get("content-type"))
        except ValueError as exc:
            raise InvalidManifestError(
                "get manifest",
                registry=self.url,
                repository=repository,
                reference=reference,
                detail=str(exc),
            ) from None
        expected = reference if is_digest(reference) else None
        expected = expected or response.headers.get("docker-content-digest")
        if expected:
            algorithm = expected.split(":", 1)[0]
            try:
                actual = compute_digest(content, algorithm)
            except ValueError:
                actual = manifest.digest  # unknown algorithm: nothing to compare with
                expected = actual
            if actual != expected:
                raise DigestMismatchError(
                    "get manifest",
                    registry=self.url,
                    repository=repository,
                    expected=expected,
                    actual=actual,
                )
        return manifest

    def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> str:
        """Store ``manifest``'s bytes under a tag or its digest; returns its digest.

        The blobs (or, for an index, the child manifests) must be in the repository
        first, or the registry refuses with 400 ``MANIFEST_BLOB_UNKNOWN``.
        """
        if is_digest(reference) and reference != manifest.digest:
            raise DigestMismatchError(
                "put manifest",
                registry=self.url,
                repository=repository,
                expected=reference,
                actual=manifest.digest,
            )
        response = self.session.send(
            Request(
                "PUT",
                f"/v2/{repository}/manifests/{reference}",
                what="put manifest",
                repository=repository,
                reference=reference,
                scopes=push_scopes(repository),
                headers={"Content-Type": manifest.media_type},
                content=manifest.content,
                expect=(200, 201, 202),
            )
        )
        stored = response.headers.get("docker-content-digest")
        if stored and stored != manifest.digest:
            raise DigestMismatchError(
                "put manifest",
                registry=self.url,
                repository=repository,
                expected=manifest.digest,
                actual=stored,
            )
        return manifest.digest

    def delete_manifest(self, repository: str, digest: str) -> bool:
        """Delete the manifest ``digest`` (and with it every tag pointing at it).

        Returns ``False`` when it was not there. A tag is refused with ``ValueError``:
        the registry deletes by digest only (see :meth:`manifest_digest`).
        """
        if not is_digest(digest):
            raise ValueError(f"delete needs a digest, not {digest!r}")
        response = self.session.send(
            Request(
                "DELETE",
                f"/v2/{repository}/manifests/{digest}",
                what="delete manifest",
                repository=repository,
                reference=digest,
                scopes=delete_scopes(repository),
                expect=(200, 202, 204, 404),
            )
        )
        return response.status_code != 404

    # -- blobs ------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether ``repository`` holds the blob ``digest`` (``HEAD``)."""
        response = self.session.send(
            Request(
                "HEAD",
                f"/v2/{repository}/blobs/{digest}",
                what="check blob",
                repository=repository,
                reference=digest,
                scopes=pull_scopes(repository),
                expect=(200, 404),
                follow_redirects=True,
            )
        )
        return response.status_code == 200

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Link the blob ``digest`` from ``from_repository`` into ``repository`` without
        copying it. ``False`` when the registry could not (the source lacks it or
        the credentials may not read it): the upload session it opened instead is
        cancelled."""
        response = self.session.send(
            Request(
                "POST",
                f"/v2/{repository}/blobs/uploads/",
                what="mount blob",
                repository=repository,
                reference=digest,
                scopes=push_scopes(repository) | {f"repository:{from_repository}:pull"},
                params={"mount": digest, "from": from_repository},
                content=b"",
                expect=(201, 202),
            )
        )
        if response.status_code == 201:
            return True
        BlobUpload(self.session, repository, resolve_location(response, str(response.url))).cancel()
        return False

    def start_upload(self, repository: str, *, algorithm: str = "sha256") -> BlobUpload:
        """Open an upload session for one blob in ``repository``; the session hashes
        what is written with ``algorithm`` (``ValueError`` for one hashlib lacks).

        The ``POST`` authenticates the client for the repository, so the session's
        streamed writes go out with credentials the registry accepts.
        """
        hashlib.new(algorithm)  # an unknown algorithm fails before the registry is asked
        response = self.session.send(
            Request(
                "POST",
                f"/v2/{repository}/blobs/uploads/",
                what="start blob upload",
                repository=repository,
                scopes=push_scopes(repository),
                content=b"",
                expect=(202,),
            )
        )
        location = resolve_location(response, str(response.url))
        return BlobUpload(self.session, repository, location, algorithm=algorithm)

    def open_blob(self, repository: str, digest: str) -> BlobStream:
        """Stream the blob ``digest`` (redirects followed); close the stream when done.

        The bytes are not checked against the digest here (:class:`BlobCopier` does).
        """
        response = self.session.send(
            Request(
                "GET",
                f"/v2/{repository}/blobs/{digest}",
                what="get blob",
                repository=repository,
                reference=digest,
                scopes=pull_scopes(repository),
                headers={"Accept-Encoding": "identity"},
                expect=(200,),
                stream=True,
                follow_redirects=True,
            )
        )
        return BlobStream(response, registry=self.url, repository=repository, digest=digest)

    def authorization(self, repository: str) -> dict[str, str]:
        """The ``Authorization`` header a pull from ``repository`` carries now, for a
        third party that fetches blobs on this client's behalf (Clair's ``Headers``).

        Basic credentials, or a Bearer token for ``repository:<name>:pull`` (fetched if
        none is cached); empty when the registry has not asked this client for
        credentials so far, so make a request first. The value is a secret: never log it.
        """
        return self._auth.headers(pull_scopes(repository))

    # -- plumbing ----------------------------------------------------------------

    def _pages(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None,
        what: str,
        repository: str | None,
        scopes: frozenset[str],
    ) -> Iterator[dict[str, object]]:
        """JSON objects of a listing and of each ``Link: <…>; rel="next"`` page after it."""
        url: str | None = path
        seen: set[str] = set()
        while url is not None:
            response = self.session.send(
                Request(
                    "GET",
                    url,
                    what=what,
                    repository=repository,
                    scopes=scopes,
                    params=params if url == path else None,
                    expect=(200,),
                )
            )
            try:
                page = response.json()
            except ValueError:
                page = None
            if not isinstance(page, dict):
                raise RegistryError(
                    what,
                    registry=self.url,
                    repository=repository,
                    status=response.status_code,
                    detail="answer is not a JSON object",
                )
            yield page
            url = None
            match = _LINK_NEXT_RE.search(response.headers.get("link", ""))
            if match:
                nxt = str(response.url.join(match.group(1)))
                if nxt not in seen:
                    seen.add(nxt)
                    url = nxt
