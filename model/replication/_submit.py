"""What a replication request becomes: the rows of the jobs to queue, checked."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from model.db import Store
from model.errors import InvalidRequest, NotFound
from model.names import check_id, check_repository, check_tags
from model.operation import Operation
from model.registry import RegistryClient
from model.settings import Settings

__all__ = ["RepositoryLister", "replication_rows", "source_registry"]

#: ``list_repositories(project_name) -> [repository, ...]`` for a request without one.
RepositoryLister = Callable[[str], list[str]]


def replication_rows(
    store: Store,
    settings: Settings,
    policy_id: int,
    repository: str | None,
    tags: Iterable[str],
    operation: str,
    list_repositories: RepositoryLister | None = None,
) -> list[dict[str, Any]]:
    """The rows of the replication jobs of ``policy_id``: one for ``repository`` or, with
    none, one per repository of the policy's project (``list_repositories``, by default
    the source registry's catalog). Raises :class:`~model.errors.NotFound` naming
    ``policy_id`` for an unknown policy (or one whose target or project is gone),
    :class:`InvalidRequest` naming the bad field."""
    check_id(policy_id, "policy_id")
    if operation not in tuple(Operation):
        raise InvalidRequest(
            "operation", f"must be one of {', '.join(Operation)}, got {operation!r}"
        )
    tag_list = check_tags(tags)
    try:
        _policy, _target, project = store.policy_with_target(policy_id)
    except NotFound as exc:
        raise NotFound(exc.what, exc.ident, field=exc.field or "policy_id") from None
    if repository is None:
        lister = list_repositories or (lambda name: _catalog(settings, name))
        repositories = [check_repository(r) for r in lister(project.name)]
    else:
        repositories = [check_repository(repository)]
        if not repository.startswith(f"{project.name}/"):
            raise InvalidRequest(
                "repository",
                f"{repository!r} is not in project {project.name!r} of policy "
                f"{policy_id}: a policy replicates only its project's repositories",
            )
    return [
        {"repository": r, "policy_id": policy_id, "operation": operation, "tags": tag_list}
        for r in repositories
    ]


def _catalog(settings: Settings, project: str) -> list[str]:
    """The source registry's repositories under ``<project>/`` (``_catalog``, paginated)."""
    with source_registry(settings) as client:
        return client.catalog(prefix=f"{project}/")


def source_registry(settings: Settings) -> RegistryClient:
    """A client of the source registry (``registry_url`` and its credentials); close it."""
    password = settings.registry_password
    return RegistryClient(
        settings.registry_url,
        username=settings.registry_username,
        password=password.get_secret_value() if password is not None else None,
        timeout_s=settings.registry_read_timeout_s,
        connect_timeout_s=settings.registry_connect_timeout_s,
    )
