"""What a replication job does to its repository's tags on the target.

Its own module, with no imports of the workflow: the tables, the API schemas and the
CLI name an operation without loading the replication package (which
:mod:`model.replication` re-exports it from).
"""

from __future__ import annotations

import enum

__all__ = ["Operation"]


class Operation(enum.StrEnum):
    """What a replication job does with its repository's tags on the target."""

    TRANSFER = "transfer"  #: copy the tags (manifests and blobs) from the source to the target
    DELETE = "delete"  #: remove the tags from the target, by digest
