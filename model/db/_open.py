"""The writer for a database URL: SQLite, PostgreSQL or MySQL/MariaDB (see
:mod:`model.db._writer`)."""

from __future__ import annotations

from model.db._postgres import PostgresWriter
from model.db._writer import SqliteWriter, Writer


def open_writer(url: str) -> Writer:
    """The writer of the database at ``url`` (a SQLAlchemy URL)."""
    if url.startswith("sqlite"):
        return SqliteWriter(url)
    if url.startswith(("mysql", "mariadb")):
        from model.db._mysql import MysqlWriter  # PyMySQL only where it is used

        return MysqlWriter(url)
    return PostgresWriter(url)
