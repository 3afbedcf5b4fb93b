"""The scanner's failures, each a :class:`~model.errors.JobServiceError` a caller can act on.

Every error carries the data that names what went wrong (the database path, the layer,
the version string) and a message a person can act on.
"""

from __future__ import annotations

from model.errors import JobServiceError

__all__ = [
    "LayerError",
    "ScannerError",
    "UnknownEcosystem",
    "VersionError",
    "VulnDBError",
]


class ScannerError(JobServiceError):
    """Base of the vulnerability scanner's errors."""


class VulnDBError(ScannerError):
    """The vulnerability database at ``path`` cannot be read; ``problem`` says why."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"vulnerability database {path}: {problem}")
        self.path = path
        self.problem = problem


class LayerError(ScannerError):
    """Image layer ``layer`` cannot be scanned (not a tar, corrupt, truncated, too large)."""

    def __init__(self, layer: str, problem: str) -> None:
        super().__init__(f"layer {layer}: {problem}")
        self.layer = layer
        self.problem = problem


class UnknownEcosystem(ScannerError):
    """No version ordering is known for ``ecosystem``."""

    def __init__(self, ecosystem: str, known: list[str]) -> None:
        super().__init__(
            f"no version ordering for ecosystem {ecosystem!r} (known: {', '.join(known)})"
        )
        self.ecosystem = ecosystem


class VersionError(ScannerError):
    """``version`` is not a valid version string in ``ecosystem``."""

    def __init__(self, ecosystem: str, version: str, problem: str = "") -> None:
        super().__init__(
            f"{ecosystem} version {version!r} is invalid" + (f": {problem}" if problem else "")
        )
        self.ecosystem = ecosystem
        self.version = version
