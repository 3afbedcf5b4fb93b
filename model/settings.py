"""Settings: one typed object, built once at the edge (CLI, service start) and passed down."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from model.errors import ConfigError

__all__ = ["Settings", "load_settings"]

#: Shortest ``notification_token`` accepted.
MIN_NOTIFICATION_TOKEN_CHARS = 16
_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


class Settings(BaseSettings):
    """Every knob of the service. Environment variables use the prefix ``JOBSERVICE_``;
    the original's names (``UI_SECRET``, ``LOG_DIR``, ``KEY_PATH``, ``MAX_JOB_WORKERS``)
    are accepted as aliases."""

    model_config = SettingsConfigDict(
        env_prefix="JOBSERVICE_", extra="forbid", populate_by_name=True, frozen=True
    )

    #: SQLAlchemy URL: ``sqlite:///path`` (default, a file in the working directory),
    #: ``postgresql+psycopg://user@host/db`` or ``mysql+pymysql://user@host/db`` (MySQL,
    #: MariaDB: Harbor 1.4's own database, see README "Replacing Harbor 1.4's jobservice").
    database_url: str = "sqlite:///jobservice.db"
    #: Folder of the per-job log files.
    log_dir: Path = Field(
        default=Path("logs"),
        validation_alias=AliasChoices("log_dir", "JOBSERVICE_LOG_DIR", "LOG_DIR"),
    )
    #: File holding the key that encrypts target passwords (created on first start if missing).
    key_path: Path = Field(
        default=Path("jobservice.key"),
        validation_alias=AliasChoices("key_path", "JOBSERVICE_KEY_PATH", "KEY_PATH"),
    )
    #: How new and changed target passwords are written: ``enc-v2`` (AES-256-GCM under
    #: a key derived from ``key_path``, the default) or ``enc-v1`` (Harbor 1.4's
    #: ``ReversibleEncrypt``: AES-CFB with the key file's bytes as the AES key), for a
    #: database a Harbor 1.4 UI shares (it reads ``<enc-v1>`` only). With ``enc-v1``,
    #: ``key_path`` must name Harbor's secret key (the host's ``/data/secretkey``,
    #: ``/etc/ui/key`` in its containers): the start fails if that file is missing (none
    #: is created) or does not hold 16, 24 or 32 bytes. Both formats are always read.
    password_format: Literal["enc-v2", "enc-v1"] = "enc-v2"
    #: Workers of the replication pool.
    max_job_workers: int = Field(
        default=3,
        ge=1,
        le=256,
        validation_alias=AliasChoices(
            "max_job_workers", "JOBSERVICE_MAX_JOB_WORKERS", "MAX_JOB_WORKERS"
        ),
    )
    #: Workers of the scan pool.
    scan_workers: int = Field(default=3, ge=1, le=256)
    #: Seconds before the first retry of a job that entered ``retrying`` (the original: 300).
    retry_delay: float = Field(default=300.0, ge=0)
    #: Upper bound in seconds of the exponential retry backoff.
    retry_delay_max: float = Field(default=3600.0, ge=0)
    #: Retries after which a job ends in ``error`` (the original retried forever).
    max_retries: int = Field(default=5, ge=0)
    #: Cookie secret the HTTP API requires (``UI_SECRET`` in the original).
    ui_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("ui_secret", "JOBSERVICE_UI_SECRET", "UI_SECRET"),
    )
    #: Source registry of replication and scan jobs.
    registry_url: str = "http://127.0.0.1:5000"
    registry_username: str | None = None
    registry_password: SecretStr | None = None
    #: Scanner of scan jobs: ``builtin`` reads the layers here and matches their packages
    #: against ``vuln_db_path`` (no server); ``adapter`` asks a Harbor pluggable scanner
    #: (API v1.0/v1.1) at ``scanner_url``; ``clair`` asks Clair v2 at ``clair_url``, as
    #: Harbor 1.4 did.
    scanner: Literal["builtin", "adapter", "clair"] = "builtin"
    #: OSV vulnerability database of the ``builtin`` scanner: a folder (searched
    #: recursively) or a ``.zip`` of OSV JSON records, as osv.dev publishes them for the
    #: Debian, Ubuntu, Alpine and PyPI ecosystems. Read at the start of each scan and
    #: reloaded when its files change. Unset: scans list the packages and match none
    #: (every component counts as severity 1, and the job log says so).
    vuln_db_path: Path | None = None
    #: Base URL of a Harbor pluggable scanner adapter (``scanner = "adapter"``), e.g.
    #: ``http://trivy-adapter:8080``; the API lives under ``/api/v1``.
    scanner_url: str | None = None
    #: Base URL of Clair v2's API (``scanner = "clair"``), e.g. ``http://clair:6060``.
    clair_url: str | None = None
    #: Seconds a job's request to a registry may wait to connect (TLS handshake included).
    registry_connect_timeout_s: float = Field(default=10.0, gt=0)
    #: Seconds a job's request to a registry may wait for the next bytes of an answer, for
    #: the registry to take more bytes of an upload, or for a free pooled connection. A
    #: stop does not wait for it: it cuts a blocked request short.
    registry_read_timeout_s: float = Field(default=60.0, gt=0)
    #: Seconds a scan's request to its scanner server (adapter, Clair) may wait to connect.
    scanner_connect_timeout_s: float = Field(default=10.0, gt=0)
    #: Seconds a scan's request to its scanner server may wait for the next bytes of an
    #: answer; unset: the scanner's own (adapter 30 s; Clair 600 s, which fetches and
    #: indexes a layer before it answers).
    scanner_read_timeout_s: float | None = Field(default=None, gt=0)
    #: Seconds ``shutdown`` waits for running jobs to reach their next transition.
    shutdown_timeout: float = Field(default=30.0, gt=0)
    #: This node's name among the nodes sharing the database (default ``host:pid``).
    node_name: str = Field(default="", max_length=255)
    #: Seconds between two heartbeats of this node in the database.
    heartbeat_interval: float = Field(default=5.0, gt=0)
    #: Seconds without a heartbeat after which a node is dead and its running jobs are
    #: taken over by the live nodes.
    node_timeout: float = Field(default=30.0, gt=0)
    #: Seconds between two looks at the database for jobs and stops that no
    #: notification announced (SQLite, a lost PostgreSQL notification, retries that fell
    #: due on another node's timer).
    poll_interval: float = Field(default=2.0, gt=0)
    #: The token Docker Distribution's notifications must carry to reach
    #: ``POST /api/notifications/registry``: the registry's ``notifications.endpoints``
    #: entry sends it as ``Authorization: Bearer <token>`` (its ``headers``). Unset
    #: (or empty): that route answers 404 and no event queues a job.
    notification_token: SecretStr | None = Field(default=None)
    #: Address ``jobservice serve`` listens on (loopback by default: put a proxy in front).
    listen_host: str = "127.0.0.1"
    #: TCP port ``jobservice serve`` listens on (0: any free port).
    listen_port: int = Field(default=8080, ge=0, le=65535)
    #: Largest request body the HTTP API reads, in bytes; larger ones get 413.
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=1_073_741_824)
    #: Days a job log is kept after its last line; older ones are deleted (0: keep forever).
    log_retention_days: float = Field(default=14.0, ge=0)
    #: Seconds between two sweeps of old job logs.
    log_sweep_interval: float = Field(default=3600.0, gt=0)
    #: Level of the service's own log on stderr (job logs always get every line).
    log_level: str = "INFO"
    #: Extra job kinds ``jobservice serve`` and ``jobservice worker`` run beside the
    #: built-in ones: entries ``"package.module:attribute"``, the attribute a
    #: :class:`~model.kinds.JobKind`, an iterable of them, or a callable taking these
    #: settings and returning either (see :mod:`model.kinds_loader`). In the
    #: environment: a JSON list, or entries separated by commas.
    kind_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(
            ("sqlite://", "postgresql", "mysql+pymysql://", "mariadb+pymysql://")
        ):
            raise ValueError("must be a sqlite://, postgresql+psycopg:// or mysql+pymysql:// URL")
        return value

    @field_validator("registry_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("vuln_db_path", mode="before")
    @classmethod
    def _unset_if_empty(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("scanner_url", "clair_url")
    @classmethod
    def _optional_http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("kind_modules", mode="before")
    @classmethod
    def _entry_list(cls, value: object) -> object:
        # The environment gives a string: a JSON list, or entries separated by commas.
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list: {exc}") from None
        return [entry for entry in (part.strip() for part in text.split(",")) if entry]

    @field_validator("notification_token")
    @classmethod
    def _usable_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        token = value.get_secret_value()
        # Never echoed: the messages describe the token, not its text.
        if len(token) < MIN_NOTIFICATION_TOKEN_CHARS:
            raise ValueError(
                f"must be at least {MIN_NOTIFICATION_TOKEN_CHARS} characters "
                "(e.g. the output of `openssl rand -hex 32`)"
            )
        if not all(33 <= ord(c) <= 126 for c in token):
            raise ValueError("must be printable ASCII without spaces (it travels in a header)")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in _LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}")
        return level

    @model_validator(mode="after")
    def _backoff_bounds(self) -> Settings:
        if self.retry_delay_max < self.retry_delay:
            raise ValueError("retry_delay_max must be >= retry_delay")
        return self

    @model_validator(mode="after")
    def _node_timeout_bounds(self) -> Settings:
        # Two beats may be late before a live node is taken for dead.
        if self.node_timeout < 2 * self.heartbeat_interval:
            raise ValueError("node_timeout must be at least twice heartbeat_interval")
        return self

    @model_validator(mode="after")
    def _scanner_endpoint(self) -> Settings:
        if self.scanner == "adapter" and not self.scanner_url:
            raise ValueError("scanner 'adapter' needs scanner_url")
        if self.scanner == "clair" and not self.clair_url:
            raise ValueError("scanner 'clair' needs clair_url")
        return self


def load_settings(*, config_file: Path | None = None, **values: object) -> Settings:
    """Build :class:`Settings` from ``values``, the environment and, when given, the TOML
    file ``config_file`` (flat ``setting = value`` lines, the names of :class:`Settings`).

    ``values`` win over the environment, which wins over the file. Raises
    :class:`~model.errors.ConfigError` naming the first invalid setting (``config`` for
    a file that is missing or not TOML).
    """
    cls: type[Settings] = Settings
    if config_file is not None:
        cls = _from_file(config_file)
    try:
        return cls(**values)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        setting = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(setting, first["msg"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{config_file} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError("config", f"cannot read {config_file}: {exc.strerror}") from None


def _from_file(path: Path) -> type[Settings]:
    """A :class:`Settings` subclass that also reads ``path`` (below the environment)."""
    if not path.is_file():
        raise ConfigError("config", f"no such file: {path}")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=path)

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    FileSettings.__name__ = FileSettings.__qualname__ = "Settings"
    return FileSettings
