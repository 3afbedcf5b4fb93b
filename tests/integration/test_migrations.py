"""The Alembic migrations on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import model.db.tables  # noqa: F401  (the tables the migrations must create)
from model.db import Store, migrations
from model.errors import ConfigError


def schema_differences(url: str) -> list[object]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": migrations.VERSION_TABLE}
            )
            return list(compare_metadata(context, SQLModel.metadata))
    finally:
        engine.dispose()


def claim_indexes(url: str) -> dict[str, str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            query = {
                "sqlite": "SELECT name, sql FROM sqlite_master WHERE name LIKE :like",
                "postgresql": "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE indexname LIKE :like",
                # MySQL has no partial index: the claim index covers every row.
                "mysql": "SELECT DISTINCT index_name, '' FROM information_schema.statistics "
                "WHERE table_schema = DATABASE() AND index_name LIKE :like",
            }[conn.dialect.name]
            rows = conn.execute(sa.text(query), {"like": "%_claim"})
            return {str(name): str(sql) for name, sql in rows}
    finally:
        engine.dispose()


def test_upgrade_creates_every_table_exactly_as_the_models_declare(database_url: str) -> None:
    assert migrations.upgrade(database_url) == (None, migrations.head())
    assert schema_differences(database_url) == []
    indexes = claim_indexes(database_url)
    assert set(indexes) == {"replication_job_claim", "img_scan_job_claim", "job_claim"}
    for sql in indexes.values():
        partial = not database_url.startswith("mysql")
        assert not partial or ("WHERE" in sql and "pending" in sql and "retrying" in sql)
    assert migrations.check_current(database_url) == migrations.head()
    assert migrations.upgrade(database_url) == (migrations.head(), migrations.head())


def test_a_database_behind_is_refused_with_a_message_naming_db_upgrade(
    database_url: str,
) -> None:
    with pytest.raises(migrations.DatabaseBehind, match="run `jobservice db upgrade`") as caught:
        migrations.check_current(database_url)
    assert caught.value.current is None and caught.value.head == migrations.head()


def test_upgrade_adopts_a_database_an_embedded_service_created(database_url: str) -> None:
    store = Store(database_url)
    store.create_all()
    store.close()
    assert migrations.current(database_url) is None
    assert migrations.upgrade(database_url) == (None, migrations.head())
    assert migrations.check_current(database_url) == migrations.head()


def test_a_database_a_newer_version_migrated_is_refused(database_url: str) -> None:
    migrations.upgrade(database_url)
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE jobservice_version SET version_num = 'f00d'")
    engine.dispose()
    with pytest.raises(ConfigError, match="does not know"):
        migrations.check_current(database_url)
    with pytest.raises(ConfigError, match="does not know"):
        migrations.upgrade(database_url)


def test_a_database_that_cannot_be_opened_is_a_config_error_naming_database_url() -> None:
    with pytest.raises(ConfigError, match="database_url"):
        migrations.current("sqlite:////nonexistent-folder/jobservice.db")


def test_a_database_at_the_first_revision_is_upgraded_to_nodes_keeping_its_jobs(
    database_url: str,
) -> None:
    migrations.upgrade(database_url, "0001")
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO job (kind, params, status, attempts, creation_time, update_time) "
            "VALUES ('k', '{}', 'running', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        )
    engine.dispose()
    store = Store(database_url)
    try:
        with pytest.raises(ConfigError, match=r"lacks the columns .*db upgrade"):
            store.create_all()
    finally:
        store.close()

    assert migrations.upgrade(database_url) == ("0001", migrations.head())
    assert schema_differences(database_url) == []
    store = Store(database_url)
    try:
        store.create_all()
        (row,) = store.nodes.take_over(store.nodes.register("n", "h", 1, "t"), "n", 30)
        assert (row.table, row.kind, row.dead_node) == ("job", "k", None)
        assert store.job("job", row.job_id)["stop_requested"] is False
    finally:
        store.close()
