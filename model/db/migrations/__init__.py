"""The database schema's Alembic migrations, run from code: the Alembic configuration is
built here (no ``alembic.ini``), with its scripts in this package.

``jobservice db upgrade`` calls :func:`upgrade`; ``jobservice serve`` calls
:func:`check_current` and refuses a database that is behind. An embedded
``JobService.start()`` still creates missing tables itself; :func:`upgrade` adopts such
a database (it records the initial revision when every table of it is there).

The migration record is the table ``jobservice_version``, so that an existing Harbor 1.4
database, whose ``alembic_version`` holds ``1.4.0``, keeps its own record untouched:
:func:`upgrade` recognises it and adds this service's columns, indexes and tables
beside Harbor's (every revision adds only what is missing). Earlier versions of this
service kept their record in ``alembic_version``; :func:`upgrade` moves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from model.errors import ConfigError

__all__ = [
    "HARBOR_VERSIONS",
    "INITIAL_TABLES",
    "VERSION_TABLE",
    "DatabaseBehind",
    "Found",
    "alembic_config",
    "check_current",
    "current",
    "found",
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
#: This service's migration record.
VERSION_TABLE = "jobservice_version"
#: Harbor's migration record, and where earlier versions of this service kept theirs.
LEGACY_VERSION_TABLE = "alembic_version"
#: The ``alembic_version`` values of the Harbor databases this service can share.
HARBOR_VERSIONS = frozenset({"1.4.0"})


@dataclass(frozen=True)
class Found:
    """What a database holds, as far as migrations go."""

    #: This service's revision (``jobservice_version``, or an earlier version's record
    #: in ``alembic_version``); None when never migrated.
    revision: str | None
    #: What ``alembic_version`` holds (Harbor's version, or an earlier record of ours).
    alembic_version: str | None
    tables: frozenset[str]

    @property
    def harbor(self) -> str | None:
        """Harbor's version when this is a Harbor database."""
        return self.alembic_version if self.alembic_version in HARBOR_VERSIONS else None

    @property
    def legacy(self) -> bool:
        """This service's record is still in ``alembic_version`` (an earlier version)."""
        return self.alembic_version is not None and self.alembic_version == self.revision

    def describe(self) -> str:
        """One line for ``jobservice db status``."""
        parts = []
        if self.harbor:
            parts.append(f"a Harbor {self.harbor} database (its alembic_version: {self.harbor})")
        if self.revision:
            parts.append(f"jobservice revision {self.revision}")
        elif self.harbor:
            parts.append("without jobservice's columns and tables yet")
        elif self.tables & INITIAL_TABLES:
            parts.append("jobservice's tables without a migration record")
        else:
            parts.append("empty" if not self.tables else "no jobservice tables")
        return ", ".join(parts)


class DatabaseBehind(ConfigError):
    """The database's schema is not the one this version needs (``current`` is None for
    a database never migrated)."""

    def __init__(self, current: str | None, head: str, harbor: str | None = None) -> None:
        at = f"at revision {current}" if current else "not migrated"
        if harbor and not current:
            at = f"Harbor {harbor}'s, without jobservice's columns and tables"
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


def found(url: str) -> Found:
    """What the database holds. Raises :class:`ConfigError` when it cannot be opened."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            revision = context.get_current_revision()
            tables = frozenset(sa.inspect(conn).get_table_names())
            alembic_version = None
            if LEGACY_VERSION_TABLE in tables:
                alembic_version = conn.execute(
                    sa.text(f"SELECT version_num FROM {LEGACY_VERSION_TABLE}")
                ).scalar()
    except sa.exc.SQLAlchemyError as exc:
        raise ConfigError("database_url", f"cannot open the database: {exc}") from exc
    finally:
        engine.dispose()
    if revision is None and alembic_version is not None and _known(alembic_version):
        revision = alembic_version
    return Found(revision, alembic_version, tables)


def current(url: str) -> str | None:
    """The database's revision (None: never migrated). Raises :class:`ConfigError` when
    the database cannot be opened."""
    return found(url).revision


def check_current(url: str) -> str:
    """Returns the database's revision when it is the newest; raises
    :class:`DatabaseBehind` when it is not, and :class:`ConfigError` when it names a
    revision this version does not know (a newer jobservice migrated it)."""
    state = found(url)
    newest = head()
    _refuse_unknown(state)
    if state.revision == newest and not state.legacy:
        return newest
    raise DatabaseBehind(state.revision, newest, state.harbor)


def _refuse_unknown(state: Found) -> None:
    if state.revision is not None and not _known(state.revision):
        raise ConfigError(
            "database_url",
            f"the database is at revision {state.revision}, which this jobservice does not "
            "know (a newer version migrated it)",
        )
    foreign = state.alembic_version is not None and state.revision != state.alembic_version
    if foreign and not state.harbor:
        raise ConfigError(
            "database_url",
            f"the database's alembic_version holds {state.alembic_version}, neither "
            f"Harbor's {', '.join(sorted(HARBOR_VERSIONS))} nor a revision of this "
            "jobservice: it belongs to another application",
        )


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
    An existing Harbor 1.4 database is migrated from the start, each revision adding
    only what it lacks; its ``alembic_version`` is left as it is. Raises
    :class:`ConfigError` when the database cannot be opened, belongs to another
    application, or holds some but not all of the initial tables without a record.
    """
    state = found(url)
    _refuse_unknown(state)
    config = alembic_config(url)
    if state.legacy:
        _move_legacy_record(url, config, state)
    elif state.revision is None and not state.harbor and state.tables & INITIAL_TABLES:
        missing = INITIAL_TABLES - state.tables
        if missing:
            raise ConfigError(
                "database_url",
                "the database has some of jobservice's tables but no migration record "
                f"(missing: {', '.join(sorted(missing))}); repair it by hand",
            )
        command.stamp(config, _INITIAL)
    try:
        command.upgrade(config, revision)
    except CommandError as exc:
        raise ConfigError("revision", str(exc)) from None
    except (sa.exc.SQLAlchemyError, RuntimeError) as exc:
        raise ConfigError("database_url", f"migration failed: {exc}") from exc
    after = current(url)
    assert after is not None
    return state.revision, after


def _move_legacy_record(url: str, config: Config, state: Found) -> None:
    """Moves an earlier version's record from ``alembic_version`` to this service's own
    table (written first: a crash in between leaves both, and the next run ends it)."""
    assert state.revision is not None
    command.stamp(config, state.revision)
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {LEGACY_VERSION_TABLE}"))
    finally:
        engine.dispose()
