"""The database schema's Alembic migrations, run from code: the Alembic configuration is
built here (no ``alembic.ini``), with its scripts in this package.

``jobservice db upgrade`` calls :func:`upgrade`; ``jobservice serve`` calls
:func:`check_current` and refuses a database that is behind. An embedded
``JobService.start()`` still creates missing tables itself; :func:`upgrade` adopts such
a database (it records the initial revision when every table of it is there).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from model.errors import ConfigError

__all__ = [
    "INITIAL_TABLES",
    "DatabaseBehind",
    "alembic_config",
    "check_current",
    "current",
    "head",
    "upgrade",
]

#: The folder of ``env.py`` and ``versions/``.
SCRIPT_LOCATION = str(Path(__file__).resolve().parent)
#: The tables revision ``0001`` creates.
INITIAL_TABLES = frozenset(
    {
        "project",
        "replication_target",
        "replication_policy",
        "replication_job",
        "img_scan_job",
        "img_scan_overview",
        "img_scan_finding",
        "job",
    }
)
_INITIAL = "0001"


class DatabaseBehind(ConfigError):
    """The database's schema is not the one this version needs (``current`` is None for
    a database never migrated)."""

    def __init__(self, current: str | None, head: str) -> None:
        at = f"at revision {current}" if current else "not migrated"
        super().__init__(
            "database_url",
            f"the database is {at}, this jobservice needs revision {head}: "
            "run `jobservice db upgrade` first",
        )
        self.current = current
        self.head = head


def alembic_config(url: str) -> Config:
    """An Alembic configuration for the database at ``url``."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    # ConfigParser interpolation: a literal % in a URL (an escaped password) is %%.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head() -> str:
    """The newest revision this version knows."""
    found = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert found is not None
    return found


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def _inspect(url: str) -> tuple[str | None, set[str]]:
    """The database's revision and its table names."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
            tables = set(sa.inspect(conn).get_table_names())
    except sa.exc.SQLAlchemyError as exc:
        raise ConfigError("database_url", f"cannot open the database: {exc}") from exc
    finally:
        engine.dispose()
    return revision, tables


def current(url: str) -> str | None:
    """The database's revision (None: never migrated). Raises :class:`ConfigError` when
    the database cannot be opened."""
    return _inspect(url)[0]


def check_current(url: str) -> str:
    """Returns the database's revision when it is the newest; raises
    :class:`DatabaseBehind` when it is not, and :class:`ConfigError` when it names a
    revision this version does not know (a newer jobservice migrated it)."""
    revision = current(url)
    newest = head()
    if revision == newest:
        return revision
    if revision is not None and not _known(revision):
        raise ConfigError(
            "database_url",
            f"the database is at revision {revision}, which this jobservice does not know "
            "(a newer version migrated it)",
        )
    raise DatabaseBehind(revision, newest)


def _known(revision: str) -> bool:
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    try:
        return scripts.get_revision(revision) is not None
    except CommandError:
        return False


def upgrade(url: str, revision: str = "head") -> tuple[str | None, str]:
    """Migrates the database to ``revision``; returns (revision before, revision after).

    A database whose tables a ``JobService.start()`` created (every table of the initial
    revision, no revision recorded) is first marked as being at the initial revision.
    Raises :class:`ConfigError` when the database cannot be opened, or holds some but
    not all of the initial tables without a recorded revision.
    """
    before, tables = _inspect(url)
    config = alembic_config(url)
    if before is None and tables & INITIAL_TABLES:
        missing = INITIAL_TABLES - tables
        if missing:
            raise ConfigError(
                "database_url",
                "the database has some of jobservice's tables but no migration record "
                f"(missing: {', '.join(sorted(missing))}); repair it by hand",
            )
        command.stamp(config, _INITIAL)
    if before is not None and not _known(before):
        raise ConfigError(
            "database_url",
            f"the database is at revision {before}, which this jobservice does not know "
            "(a newer version migrated it)",
        )
    try:
        command.upgrade(config, revision)
    except CommandError as exc:
        raise ConfigError("revision", str(exc)) from None
    except sa.exc.SQLAlchemyError as exc:
        raise ConfigError("database_url", f"migration failed: {exc}") from exc
    after = current(url)
    assert after is not None
    return before, after
