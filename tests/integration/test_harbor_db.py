"""The database shared with Harbor 1.4: Harbor's own inserts work on the tables this
service creates, and an existing Harbor 1.4 database (a real MariaDB, Harbor's schema and
rows) is upgraded without a change to Harbor's rows, then runs replication and scan jobs
on Harbor's project, policy and target (an ``<enc-v1>`` password)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from harbor14 import (
    HARBOR_TABLES,
    decrypt_v1,
    encrypt_v1,
    harbor_rows,
    insert_harbor_rows,
    schema_for,
)
from mariadb import MariaDBServer
from registries import AuthRegistry, ImageBuilder, RegistryServer, push_image, skopeo_digest
from typer.testing import CliRunner

from actors import JobService
from actors.cli import app
from model.catalog import Catalog
from model.crypto import SecretBox
from model.db import Store, migrations
from model.db.tables import (
    ImgScanJob,
    ImgScanOverview,
    Project,
    ReplicationJob,
    ReplicationTarget,
)
from model.errors import ConfigError
from model.status import Status

#: Harbor's secret key: 16 characters, its bytes the AES key of ``<enc-v1>``.
HARBOR_KEY = b"harborsecretkey1"
JOB_TIMEOUT_S = 60.0
#: One OSV record, for the builtin scanner's database.
ADVISORY = {
    "id": "DEBIAN-TEST-0001",
    "modified": "2026-01-01T00:00:00Z",
    "affected": [
        {
            "package": {"ecosystem": "Debian:12", "name": "dpkg"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "9"}]}],
        }
    ],
}


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def _columns(url: str) -> dict[str, list[str]]:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            return {t: [c["name"] for c in inspector.get_columns(t)] for t in HARBOR_TABLES}
    finally:
        engine.dispose()


@pytest.fixture(params=["mariadb", "sqlite"])
def harbor_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database as Harbor 1.4's installer leaves it: on MariaDB (charset utf8, as Harbor
    makes it), and the same tables on a SQLite file."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/registry.db"
    else:
        mariadb: MariaDBServer = request.getfixturevalue("mariadb")
        name = f"harbor_{uuid.uuid4().hex[:10]}"
        with mariadb.connect() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8")
        url = mariadb.url(name)
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            for statement in schema_for(engine.dialect.name):
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()
    return url


def _seed(
    url: str, target: RegistryServer, username: str, password: str, name: str = "harborproj"
) -> dict[str, int]:
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            return insert_harbor_rows(
                conn,
                target_url=target.url,
                username=username,
                password_v1=encrypt_v1(password, HARBOR_KEY),
                name=name,
            )
    finally:
        engine.dispose()


def _snapshot(url: str, columns: dict[str, list[str]]) -> dict[str, list[tuple[object, ...]]]:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return harbor_rows(conn, columns)
    finally:
        engine.dispose()


# -- a fresh database -------------------------------------------------------------------


def test_harbors_own_inserts_work_on_the_tables_this_service_creates(database_url: str) -> None:
    """Harbor's statements name only Harbor's columns: every column of ours has a
    default, and the job Harbor inserts is one this service reads. (Booleans are bound
    as parameters: Harbor 1.4 ran on MySQL only, whose booleans are integers.)"""
    migrations.upgrade(database_url)
    now = datetime(2018, 3, 1, 12, 0, 0)
    engine = _engine(database_url)
    try:
        with engine.begin() as conn:
            project = conn.execute(
                sa.text(
                    "insert into project (owner_id, name, creation_time, update_time, deleted) "
                    "values (1, 'harborproj', :now, :now, :no)"
                ),
                {"now": now, "no": False},
            )
            target = conn.execute(
                sa.text(
                    "INSERT INTO replication_target (url, name, username, password, "
                    "target_type, insecure, creation_time, update_time) VALUES "
                    "('http://127.0.0.1:5000', 'dr', 'robot', :pw, 1, :no, :now, :now)"
                ),
                {"pw": encrypt_v1("s3cret", HARBOR_KEY), "now": now, "no": False},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO replication_policy (project_id, target_id, name, description, "
                    "cron_str, filters, replicate_deletion, creation_time, update_time, "
                    "deleted) VALUES (1, 1, 'p', '', '', '', :no, :now, :now, :no)"
                ),
                {"now": now, "no": False},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO replication_job (status, repository, policy_id, operation, "
                    "tags, creation_time, update_time) VALUES ('pending', 'harborproj/app', "
                    "1, 'transfer', NULL, :now, :now)"
                ),
                {"now": now},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO img_scan_job (status, repository, tag, digest, creation_time, "
                    "update_time) VALUES ('pending', 'harborproj/app', 'v1', NULL, :now, :now)"
                ),
                {"now": now},
            )
    finally:
        engine.dispose()
    assert project.rowcount == target.rowcount == 1

    store = Store(database_url)
    try:
        store.create_all()
        (row,) = store.list_rows(ReplicationTarget)
        assert (row.url, row.target_type) == ("http://127.0.0.1:5000", 1)
        assert SecretBox(HARBOR_KEY).decrypt(row.password) == "s3cret"
        (job,) = store.list_rows(ReplicationJob)
        assert (job.status, job.attempts, job.tags, job.stop_requested) == (
            "pending",
            0,
            [],
            False,
        )
        (scan,) = store.list_rows(ImgScanJob)
        assert (scan.status, scan.attempts) == ("pending", 0)
    finally:
        store.close()


# -- an existing Harbor 1.4 database ----------------------------------------------------


def test_db_status_and_upgrade_recognise_harbor_and_change_none_of_its_rows(
    harbor_url: str, registry: RegistryServer, tmp_path: Path
) -> None:
    _seed(harbor_url, registry, "robot", "s3cret")
    harbors = _columns(harbor_url)
    before = _snapshot(harbor_url, harbors)
    config = tmp_path / "jobservice.toml"
    config.write_text(f'database_url = "{harbor_url}"\nlog_dir = "{tmp_path / "logs"}"\n')
    runner = CliRunner()

    status = runner.invoke(app, ["db", "status", "--config", str(config)])
    assert status.exit_code == 1, status.output
    assert "a Harbor 1.4.0 database" in status.output
    assert "jobservice db upgrade" in status.output
    with pytest.raises(migrations.DatabaseBehind, match=r"Harbor 1\.4\.0"):
        migrations.check_current(harbor_url)

    upgrade = runner.invoke(app, ["db", "upgrade", "--config", str(config)])
    assert upgrade.exit_code == 0, upgrade.output
    assert f"now at revision {migrations.head()}" in upgrade.output
    assert "Harbor 1.4.0" in upgrade.output

    assert _snapshot(harbor_url, harbors) == before
    after = _columns(harbor_url)
    for table, names in harbors.items():
        assert after[table][: len(names)] == names, table
    assert {"attempts", "next_attempt_at", "node_id", "stop_requested"} <= set(
        after["replication_job"]
    )
    assert migrations.check_current(harbor_url) == migrations.head()
    state = migrations.found(harbor_url)
    assert (state.alembic_version, state.revision) == ("1.4.0", migrations.head())
    assert {"job", "node", "schedule", "img_scan_finding", "jobservice_version"} <= state.tables
    status = runner.invoke(app, ["db", "status", "--config", str(config)])
    assert status.exit_code == 0, status.output
    # A second upgrade finds nothing to do.
    assert migrations.upgrade(harbor_url) == (migrations.head(), migrations.head())
    # Harbor's own inserts into each of its tables still work, with our columns' defaults.
    again = _seed(harbor_url, registry, "robot", "s3cret", name="another")
    store = Store(harbor_url)
    try:
        store.create_all()
        job = store.get(ReplicationJob, again["finished_job"])
        assert (job.status, job.attempts, job.node_id, job.stop_requested) == (
            "finished",
            0,
            None,
            False,
        )
        assert store.get(ImgScanJob, again["scan_job"]).attempts == 0
        assert store.get(Project, again["project"]).name == "another"
    finally:
        store.close()


def test_a_database_of_another_application_is_refused_naming_its_alembic_version(
    mariadb: MariaDBServer,
) -> None:
    url = mariadb.new_database()
    engine = _engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table alembic_version (version_num varchar(32) NOT NULL)"))
        conn.execute(sa.text("insert into alembic_version values ('ae1027a6acf')"))
    engine.dispose()
    with pytest.raises(ConfigError, match=r"alembic_version holds ae1027a6acf.*another"):
        migrations.upgrade(url)


def test_the_service_replicates_and_scans_on_harbors_own_policy_target_and_project(
    harbor_url: str,
    htpasswd_registry: AuthRegistry,
    registry: RegistryServer,
    images: ImageBuilder,
    make_service: Callable[..., JobService],
    tmp_path: Path,
) -> None:
    target = htpasswd_registry
    ids = _seed(harbor_url, target.server, target.username, target.password)
    migrations.upgrade(harbor_url)
    key = tmp_path / "harbor-secretkey"
    key.write_bytes(HARBOR_KEY)
    image = images.docker_image([images.random_layer(4096)])
    push_image(images, image, registry.host, "harborproj/app", "v1")
    osv = tmp_path / "osv"
    (osv / "Debian").mkdir(parents=True)
    (osv / "Debian" / "DEBIAN-TEST-0001.json").write_text(json.dumps(ADVISORY))
    service = make_service(
        database_url=harbor_url,
        registry_url=registry.url,
        key_path=key,
        vuln_db_path=osv,
        password_format="enc-v1",
    )

    (job_id,) = service.replicate(ids["policy"], "harborproj/app", ("v1",), "transfer")
    assert service.wait("replication", job_id, JOB_TIMEOUT_S) == Status.FINISHED
    creds = f"{target.username}:{target.password}"
    assert skopeo_digest(target.server.host, "harborproj/app", "v1", creds=creds) == (
        skopeo_digest(registry.host, "harborproj/app", "v1")
    )

    scan_id = service.scan("harborproj/app", "v1")
    assert service.wait("scan", scan_id, JOB_TIMEOUT_S) == Status.FINISHED
    engine = _engine(harbor_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT status, repository, tags FROM replication_job WHERE id = :i"),
                {"i": job_id},
            ).all()
            assert [tuple(r) for r in rows] == [("finished", "harborproj/app", "v1")]
            digest = conn.execute(
                sa.text("SELECT digest FROM img_scan_job WHERE id = :i"), {"i": scan_id}
            ).scalar()
            assert digest == image.digest
    finally:
        engine.dispose()
    (overview,) = [
        o for o in service.store.list_rows(ImgScanOverview) if o.image_digest == image.digest
    ]
    assert overview.scan_job_id == scan_id

    # A target saved here is one Harbor's UI reads: <enc-v1> under Harbor's key.
    added = Catalog(service.store, service.box).add_target(
        "from-jobservice", target.server.url, target.username, target.password, insecure=True
    )
    assert added.password.startswith("<enc-v1>")
    assert decrypt_v1(added.password, HARBOR_KEY) == target.password


# -- an earlier database of this service ------------------------------------------------


def _at_0003_with_the_old_record(url: str) -> sa.Engine:
    """A database an earlier version migrated to 0003: its record in alembic_version."""
    migrations.upgrade(url, "0003")
    engine = _engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('0003')"))
        conn.execute(sa.text(f"DROP TABLE {migrations.VERSION_TABLE}"))
    return engine


def test_an_earlier_database_gets_harbors_shapes_keeping_its_rows_and_moves_its_record(
    database_url: str,
) -> None:
    engine = _at_0003_with_the_old_record(database_url)
    now = datetime(2026, 11, 30, 8, 0, 0)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO project (id, name, public, auto_scan) VALUES (7, 'lib', :t, :t)"),
            {"t": True},
        )
        conn.execute(
            sa.text(
                "INSERT INTO replication_target (id, name, url, username, password, insecure, "
                "creation_time, update_time) VALUES (3, 'dr', 'https://dr.example', 'u', "
                "'<enc-v2>x', :f, :now, :now)"
            ),
            {"f": False, "now": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO replication_job (id, status, attempts, repository, policy_id, "
                "operation, tags, creation_time, update_time, stop_requested) VALUES "
                "(11, 'pending', 2, 'lib/app', 1, 'transfer', 'a,b', :now, :now, :f)"
            ),
            {"f": False, "now": now},
        )
    engine.dispose()
    assert migrations.found(database_url).legacy
    with pytest.raises(migrations.DatabaseBehind, match="at revision 0003"):
        migrations.check_current(database_url)

    assert migrations.upgrade(database_url) == ("0003", migrations.head())
    state = migrations.found(database_url)
    assert (state.revision, state.alembic_version) == (migrations.head(), None)
    assert "alembic_version" not in state.tables

    store = Store(database_url)
    try:
        store.create_all()
        project = store.get(Project, 7)
        assert (project.name, project.public, project.auto_scan, project.owner_id) == (
            "lib",
            True,
            True,
            1,
        )
        target = store.get(ReplicationTarget, 3)
        assert (target.url, target.target_type, target.password) == (
            "https://dr.example",
            0,
            "<enc-v2>x",
        )
        job = store.get(ReplicationJob, 11)
        assert (job.status, job.attempts, job.tags) == ("pending", 2, ["a", "b"])
    finally:
        store.close()


def test_an_earlier_target_url_longer_than_harbors_column_stops_the_upgrade_naming_it(
    database_url: str,
) -> None:
    engine = _at_0003_with_the_old_record(database_url)
    long_url = "https://" + "r" * 70 + ".example"
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO replication_target (id, name, url, username, password, insecure, "
                "creation_time, update_time) VALUES (5, 'far', :url, '', '', :f, :now, :now)"
            ),
            {"url": long_url, "f": False, "now": datetime(2026, 11, 30)},
        )
    engine.dispose()
    with pytest.raises(ConfigError, match=r"replication_target\.url holds at most 64.*rows 5"):
        migrations.upgrade(database_url)
    assert migrations.found(database_url).revision == "0003"
    store_engine = _engine(database_url)
    try:
        with store_engine.connect() as conn:
            url = conn.execute(sa.text("SELECT url FROM replication_target")).scalar()
    finally:
        store_engine.dispose()
    assert url == long_url
