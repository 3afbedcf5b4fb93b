"""A client of the Docker Registry HTTP API v2 / OCI distribution API, on ``httpx``.

:class:`RegistryClient` talks to one registry: ping, catalog, tags, manifests as raw
bytes with their media type (digests preserved), blobs (existence, mount, upload
sessions, streamed reads) with anonymous, Basic or Bearer-token authentication.
:class:`BlobCopier` moves one blob between two registries in bounded, cancellable
steps, each streamed from the source into one upload request, and checks its digest.
Failures raise :class:`RegistryError` subclasses; those a later try may cure
(network, 5xx, 429, a token that expired under a streamed upload) are also
:class:`~model.errors.RetryableError`. A request a stop of the calling worker's job cut
short raises :class:`RegistryStopRequested` (see :mod:`model.net`).

Inside the package, one module a concept: ``_session`` (a request described once, sent
with the credentials the registry asks for; what the client and the blob code send
through), ``_auth`` (challenges, tokens), ``_client``, ``_upload`` (an upload session),
``_stream`` (reading a blob, asking again from where an answer broke off), ``_copier``
(one blob between two registries, resuming after faults), ``_retry`` (backoff inside a
step), ``_manifest``, ``_errors``.
"""

from __future__ import annotations

from model.registry._auth import Challenge, parse_challenges
from model.registry._client import DEFAULT_TIMEOUT_S, RegistryClient
from model.registry._copier import DEFAULT_STEP_BYTES, BlobCopier
from model.registry._errors import (
    DigestMismatchError,
    InvalidManifestError,
    RegistryAuthError,
    RegistryAuthExpiredError,
    RegistryContentError,
    RegistryError,
    RegistryNotFoundError,
    RegistryStopRequested,
    RegistryUnavailableError,
)
from model.registry._manifest import (
    ACCEPT_MANIFESTS,
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    MEDIA_TYPE_DOCKER_LIST,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    Manifest,
    compute_digest,
    is_digest,
)
from model.registry._stream import BlobStream
from model.registry._upload import BlobUpload

__all__ = [
    "ACCEPT_MANIFESTS",
    "DEFAULT_STEP_BYTES",
    "DEFAULT_TIMEOUT_S",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_MEDIA_TYPES",
    "MEDIA_TYPE_DOCKER_LIST",
    "MEDIA_TYPE_DOCKER_MANIFEST",
    "MEDIA_TYPE_OCI_INDEX",
    "MEDIA_TYPE_OCI_MANIFEST",
    "BlobCopier",
    "BlobStream",
    "BlobUpload",
    "Challenge",
    "Descriptor",
    "DigestMismatchError",
    "InvalidManifestError",
    "Manifest",
    "RegistryAuthError",
    "RegistryAuthExpiredError",
    "RegistryClient",
    "RegistryContentError",
    "RegistryError",
    "RegistryNotFoundError",
    "RegistryStopRequested",
    "RegistryUnavailableError",
    "compute_digest",
    "is_digest",
    "parse_challenges",
]
