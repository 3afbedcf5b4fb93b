"""The scan workflow: find vulnerable packages in an image of the source registry.

States, as the original's: ``running → initialize → scanlayer`` (once per layer, one
layer per transition, so a stop request lands between layers) ``→ summarize →
finished``. The setting ``scanner`` chooses who looks at the layers:

- ``builtin`` (default, no server): each layer is streamed from the registry, its
  bytes checked against its digest, its package databases read
  (:mod:`model.scan.builtin.packages`); ``summarize`` merges the layers (whiteouts applied)
  and matches the packages against the OSV database at ``vuln_db_path``.
- ``adapter``: a Harbor pluggable scanner (API v1.0/v1.1) at ``scanner_url`` scans each
  image; ``scanlayer`` polls its reports.
- ``clair``: Clair v2 at ``clair_url`` indexes each layer, base first, as Harbor 1.4 did.

All three give, per image, components and findings to one summarizer
(:mod:`model.scan.builtin.summary`). ``summarize`` upserts the ``img_scan_overview`` row of
the image's digest (severity on Harbor 1.4's 1-5 scale, ``components_overview`` as
Harbor 1.4's JSON, ``details_key``) and replaces its ``img_scan_finding`` rows.

An index (manifest list) is scanned image by image: **each child image gets its own
overview and findings rows**, under its own digest, as if scanned alone; the index's
row combines them (totals and counts summed, severity the worst child's), its
findings are the children's (each vulnerability of a component once), and its
``details_key`` is empty. Attestation manifests (platform ``unknown/unknown``) and
non-image children are left out.

``details_key`` is the Clair name of the image's top layer (the SHA-256 of its layer
digests' chain) for ``builtin`` and ``clair``, as Harbor 1.4 stored it, and the
adapter's scan request id for ``adapter``.

Failures: an image that is not in the registry, a layer that is not a (gzip/zstd) tar,
an unreadable vulnerability database, a scanner's refusal → ``error``, with a message
that names it in the job's log; a registry or scanner that cannot be reached (or
answers 5xx) → ``retrying``, and the scan starts over from ``initialize``.
"""

from __future__ import annotations

from model.scan._errors import (
    ImageNotFound,
    NotAnImage,
    ScanError,
    ScannerFailed,
    ScannerUnavailable,
)
from model.scan._submit import image_digest, scan_row
from model.scan._workflow import (
    TRANSITIONS,
    ScanState,
    add_transitions,
    close_shared,
    open_shared,
)

__all__ = [
    "TRANSITIONS",
    "ImageNotFound",
    "NotAnImage",
    "ScanError",
    "ScanState",
    "ScannerFailed",
    "ScannerUnavailable",
    "add_transitions",
    "close_shared",
    "image_digest",
    "open_shared",
    "scan_row",
]
