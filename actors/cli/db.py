"""``jobservice db``: the database schema (Alembic migrations), run in this process."""

from __future__ import annotations

from typing import Annotated

import typer

from actors.cli._common import ConfigOpt, console, fail, settings
from model.errors import ConfigError

__all__ = ["db_app"]

db_app = typer.Typer(help="The database schema (Alembic migrations).", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(
    config: ConfigOpt = None,
    revision: Annotated[str, typer.Option(help="Revision to reach.")] = "head",
) -> None:
    """Migrate the database to the newest schema (creates it when empty)."""
    from model.db import migrations

    database_url = settings(config).database_url
    try:
        found = migrations.found(database_url)
        before, after = migrations.upgrade(database_url, revision)
    except ConfigError as exc:
        fail(str(exc))
    if before == after:
        console.print(f"the database is at revision {after}: nothing to do")
    else:
        was = before or ("empty" if not found.tables else found.describe())
        console.print(f"the database is now at revision {after} (was {was})")


@db_app.command("status")
def db_status(config: ConfigOpt = None) -> None:
    """Show the database's revision; exit status 1 when it needs `db upgrade`."""
    from model.db import migrations

    database_url = settings(config).database_url
    try:
        found = migrations.found(database_url)
    except ConfigError as exc:
        fail(str(exc))
    head = migrations.head()
    console.print(f"database: {found.describe()}")
    console.print(f"database revision: {found.revision or 'none'}; this version needs: {head}")
    if found.revision != head or found.legacy:
        fail("the database is behind: run `jobservice db upgrade`")
