"""The registry clients of a replication job, built from its parameters and settings and
shared with the service's other jobs through a :class:`ClientPool`."""

from __future__ import annotations

from model.jobs import RepJob, RepJobParams
from model.registry import RegistryClient
from model.replication._errors import ReplicationError
from model.replication._shared import ClientPool
from model.settings import Settings

__all__ = ["job_params", "source_client", "target_client", "target_label"]


def job_params(job: RepJob) -> RepJobParams:
    """The job's parameters (loaded by ``job.init()``)."""
    if job.params is None:
        raise ReplicationError(f"replication job {job.id} has no parameters (init() not run)")
    return job.params


def _client(
    settings: Settings,
    pool: ClientPool,
    url: str,
    username: str | None,
    password: str | None,
    insecure: bool,
) -> RegistryClient:
    return pool.acquire(
        pool.key(url, username, password, insecure),
        lambda: RegistryClient(
            url,
            username=username,
            password=password,
            insecure=insecure,
            timeout_s=settings.registry_read_timeout_s,
            connect_timeout_s=settings.registry_connect_timeout_s,
        ),
    )


def source_client(job: RepJob, pool: ClientPool) -> RegistryClient:
    """A client of the source registry (settings ``registry_url``, ``registry_username``,
    ``registry_password``) from ``pool``; give it back with ``pool.release``. The
    password is registered as a secret of the job's log."""
    settings = job.ctx.settings
    secret = settings.registry_password
    password = secret.get_secret_value() if secret is not None else None
    if password:
        job.secret(password)
    username = settings.registry_username or None
    return _client(settings, pool, job_params(job).local_registry_url, username, password, False)


def target_client(job: RepJob, pool: ClientPool) -> RegistryClient:
    """A client of the policy's target with its (decrypted) credentials, from ``pool``;
    give it back with ``pool.release``."""
    params = job_params(job)
    return _client(
        job.ctx.settings,
        pool,
        params.target_url,
        params.target_username or None,
        params.target_password or None,
        params.insecure,
    )


def target_label(job: RepJob) -> str:
    """How logs and errors name the target: ``'name' (url)``."""
    params = job_params(job)
    name = job.target.name if job.target is not None else ""
    return f"{name!r} ({params.target_url})" if name else params.target_url
