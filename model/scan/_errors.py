"""The scan workflow's failures: each names the image, layer or scanner it is about."""

from __future__ import annotations

from model.errors import JobServiceError, RetryableError

__all__ = [
    "ImageNotFound",
    "NotAnImage",
    "ScanError",
    "ScannerFailed",
    "ScannerUnavailable",
]


class ScanError(JobServiceError):
    """Base of the scan workflow's own errors (the scanner library's are
    :class:`~model.scan.builtin.errors.ScannerError`, the registry's
    :class:`~model.registry.RegistryError`)."""


class ImageNotFound(ScanError):
    """``repository:reference`` is not in the registry at ``registry``."""

    def __init__(self, registry: str, repository: str, reference: str) -> None:
        sep = "@" if ":" in reference else ":"
        super().__init__(f"image {repository}{sep}{reference} not found in registry {registry}")
        self.registry = registry
        self.repository = repository
        self.reference = reference


class NotAnImage(ScanError):
    """The manifest ``digest`` is not a container image (an artifact of another kind,
    or an index without images); ``problem`` says why."""

    def __init__(self, digest: str, problem: str) -> None:
        super().__init__(f"{digest} is not a container image: {problem}")
        self.digest = digest
        self.problem = problem


class ScannerFailed(ScanError):
    """The scanner at ``url`` answered, but refused or failed the work (``problem``)."""

    def __init__(self, scanner: str, url: str, problem: str) -> None:
        super().__init__(f"{scanner} at {url}: {problem}")
        self.scanner = scanner
        self.url = url
        self.problem = problem


class ScannerUnavailable(ScanError, RetryableError):
    """The scanner at ``url`` cannot be reached or failed with a server error (5xx);
    retryable. ``retry_after`` is the delay in seconds it asked for, if any."""

    def __init__(
        self, scanner: str, url: str, problem: str, *, retry_after: float | None = None
    ) -> None:
        RetryableError.__init__(
            self, f"{scanner} at {url} unavailable: {problem}", retry_after=retry_after
        )
        self.scanner = scanner
        self.url = url
        self.problem = problem
