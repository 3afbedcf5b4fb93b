"""The transfer's ``check`` state: the target answers as a registry and lets the
credentials push."""

from __future__ import annotations

from model.registry import (
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    RegistryUnavailableError,
)
from model.registry._retry import retrying
from model.replication._errors import TargetCheckError

__all__ = ["check_target"]


def check_target(target: RegistryClient, repository: str, label: str) -> str:
    """Checks that ``target`` answers ``GET /v2/`` and lets its credentials push to
    ``repository`` (an upload session opened and cancelled); returns who pushes
    ("user 'x'" or "anonymous users"). Raises :class:`TargetCheckError` saying which
    check failed and why (``label`` names the target), the retryable
    :class:`RegistryUnavailableError` when the target cannot be reached.
    """

    user = target.username
    who = f"user {user!r}" if user else "anonymous users"
    try:
        retrying(target.ping)
    except RegistryAuthError as exc:
        refused = f"the credentials of user {user!r}" if user else "anonymous access"
        raise _failed(target, f"target {label} refused {refused}", exc) from None
    except RegistryUnavailableError:
        raise
    except RegistryError as exc:
        raise _failed(
            target, f"target {label} does not answer GET /v2/ as a registry", exc
        ) from None
    try:
        retrying(lambda: target.start_upload(repository).cancel())
    except RegistryAuthError as exc:
        raise _failed(
            target, f"target {label} does not let {who} push to {repository}", exc
        ) from None
    return who


def _failed(target: RegistryClient, what: str, exc: RegistryError) -> TargetCheckError:
    return TargetCheckError(
        f"{what} (HTTP {exc.status}): {exc}", target=target.url, status=exc.status, code=exc.code
    )
