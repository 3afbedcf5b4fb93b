"""Harbor 1.4's own side of a shared database, for the drop-in tests.

``SCHEMA`` restates, for MySQL/MariaDB, the tables of Harbor v1.4.0's
``make/photon/db/registry.sql`` that its jobservice reads and writes, with the users
and project metadata they refer to and Harbor's migration record (``alembic_version``
holding ``1.4.0``): a database as Harbor's installer leaves it. The ``insert_*``
functions write rows with the statements Harbor's code issues (``dao.AddProject``'s raw
SQL; beego ORM's ``Insert`` of ``RepTarget``, ``RepPolicy``, ``RepJob`` and ``ScanJob``,
which names every mapped column but the key). ``encrypt_v1`` is Harbor's
``utils.ReversibleEncrypt``: AES-CFB under the secret key's bytes, the IV first,
base64, behind ``<enc-v1>``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = [
    "HARBOR_TABLES",
    "SCHEMA",
    "decrypt_v1",
    "encrypt_v1",
    "harbor_rows",
    "insert_harbor_rows",
    "schema_for",
]

SCHEMA = [
    """create table user (
 user_id int NOT NULL AUTO_INCREMENT, username varchar(255), email varchar(255),
 password varchar(40) NOT NULL, realname varchar(255) NOT NULL, comment varchar(30),
 deleted tinyint(1) DEFAULT 0 NOT NULL, reset_uuid varchar(40) DEFAULT NULL,
 salt varchar(40) DEFAULT NULL, sysadmin_flag tinyint(1), creation_time timestamp,
 update_time timestamp, primary key (user_id), UNIQUE (username), UNIQUE (email))""",
    """insert into user (username, email, password, realname, comment, deleted,
 sysadmin_flag, creation_time, update_time) values
 ('admin', 'admin@example.com', '', 'system admin', 'admin user', 0, 1, NOW(), NOW())""",
    """create table project (
 project_id int NOT NULL AUTO_INCREMENT, owner_id int NOT NULL,
 name varchar(255) NOT NULL, creation_time timestamp, update_time timestamp,
 deleted tinyint(1) DEFAULT 0 NOT NULL, primary key (project_id),
 FOREIGN KEY (owner_id) REFERENCES user(user_id), UNIQUE (name))""",
    """create table project_metadata (
 id int NOT NULL AUTO_INCREMENT, project_id int NOT NULL, name varchar(255) NOT NULL,
 value varchar(255), creation_time timestamp default CURRENT_TIMESTAMP,
 update_time timestamp default CURRENT_TIMESTAMP on update CURRENT_TIMESTAMP,
 deleted tinyint(1) DEFAULT 0 NOT NULL, PRIMARY KEY (id),
 CONSTRAINT unique_project_id_and_name UNIQUE (project_id, name),
 FOREIGN KEY (project_id) REFERENCES project(project_id))""",
    """create table replication_policy (
 id int NOT NULL AUTO_INCREMENT, name varchar(256), project_id int NOT NULL,
 target_id int NOT NULL, enabled tinyint(1) NOT NULL DEFAULT 1, description text,
 deleted tinyint(1) DEFAULT 0 NOT NULL, cron_str varchar(256), filters varchar(1024),
 replicate_deletion tinyint(1) DEFAULT 0 NOT NULL, start_time timestamp NULL,
 creation_time timestamp default CURRENT_TIMESTAMP,
 update_time timestamp default CURRENT_TIMESTAMP on update CURRENT_TIMESTAMP,
 PRIMARY KEY (id))""",
    """create table replication_target (
 id int NOT NULL AUTO_INCREMENT, name varchar(64), url varchar(64),
 username varchar(255), password varchar(128),
 target_type tinyint(1) NOT NULL DEFAULT 0, insecure tinyint(1) NOT NULL DEFAULT 0,
 creation_time timestamp default CURRENT_TIMESTAMP,
 update_time timestamp default CURRENT_TIMESTAMP on update CURRENT_TIMESTAMP,
 PRIMARY KEY (id))""",
    """create table replication_job (
 id int NOT NULL AUTO_INCREMENT, status varchar(64) NOT NULL, policy_id int NOT NULL,
 repository varchar(256) NOT NULL, operation varchar(64) NOT NULL,
 tags varchar(16384), creation_time timestamp default CURRENT_TIMESTAMP,
 update_time timestamp default CURRENT_TIMESTAMP on update CURRENT_TIMESTAMP,
 PRIMARY KEY (id), INDEX policy (policy_id), INDEX poid_uptime (policy_id, update_time))""",
    """create table replication_immediate_trigger (
 id int NOT NULL AUTO_INCREMENT, policy_id int NOT NULL, namespace varchar(256) NOT NULL,
 on_push tinyint(1) NOT NULL DEFAULT 0, on_deletion tinyint(1) NOT NULL DEFAULT 0,
 creation_time timestamp default CURRENT_TIMESTAMP,
 update_time timestamp default CURRENT_TIMESTAMP on update CURRENT_TIMESTAMP,
 PRIMARY KEY (id))""",
    """create table img_scan_job (
 id int NOT NULL AUTO_INCREMENT, status varchar(64) NOT NULL,
 repository varchar(256) NOT NULL, tag varchar(128) NOT NULL, digest varchar(128),
 creation_time timestamp default CURRENT_TIMESTAMP,
 update_time timestamp default CURRENT_TIMESTAMP on update CURRENT_TIMESTAMP,
 PRIMARY KEY (id))""",
    """create table img_scan_overview (
 id int NOT NULL AUTO_INCREMENT, image_digest varchar(128) NOT NULL,
 scan_job_id int NOT NULL, severity int NOT NULL default 0,
 components_overview varchar(2048), details_key varchar(128),
 creation_time timestamp default CURRENT_TIMESTAMP,
 update_time timestamp default CURRENT_TIMESTAMP on update CURRENT_TIMESTAMP,
 PRIMARY KEY(id), UNIQUE(image_digest))""",
    """create table properties (
 id int NOT NULL AUTO_INCREMENT, k varchar(64) NOT NULL, v varchar(128) NOT NULL,
 PRIMARY KEY(id), UNIQUE (k))""",
    "create table alembic_version (version_num varchar(32) NOT NULL)",
    "insert into alembic_version values ('1.4.0')",
]


def schema_for(dialect: str) -> list[str]:
    """``SCHEMA`` for ``dialect``: as it is for MySQL/MariaDB; for SQLite, the same
    tables in SQLite's words (a key column is an INTEGER rowid, MySQL's in-table
    ``INDEX`` becomes a ``CREATE INDEX``, ``on update`` goes: SQLite has no such clause)."""
    if dialect in ("mysql", "mariadb"):
        return list(SCHEMA)
    statements: list[str] = []
    for statement in SCHEMA:
        statement = re.sub(r"(\w+) int NOT NULL AUTO_INCREMENT", r"\1 INTEGER NOT NULL", statement)
        statement = statement.replace(" on update CURRENT_TIMESTAMP", "")
        statement = statement.replace("NOW()", "CURRENT_TIMESTAMP")
        table = re.match(r"create table (\w+)", statement)
        indexes = re.findall(r",\s*INDEX (\w+) \(([^)]*)\)", statement)
        statement = re.sub(r",\s*INDEX \w+ \([^)]*\)", "", statement)
        statements.append(statement)
        for name, columns in indexes:
            assert table is not None
            statements.append(f"create index {name} on {table.group(1)} ({columns})")
    return statements


#: Harbor's tables, whose rows the upgrade must leave as they are.
HARBOR_TABLES = (
    "user",
    "project",
    "project_metadata",
    "replication_policy",
    "replication_target",
    "replication_job",
    "replication_immediate_trigger",
    "img_scan_job",
    "img_scan_overview",
    "properties",
    "alembic_version",
)


#: Harbor 1.4's ``cron_str`` of a policy replicated by hand.
_MANUAL = '{"kind":"Manual","schedule_param":null}'
#: Harbor 1.4's ``filters`` of a policy without filters.
_FILTERS = "[]"


def encrypt_v1(plaintext: str, key: bytes) -> str:
    """Harbor 1.4's ``ReversibleEncrypt``."""
    iv = os.urandom(16)
    encryptor = Cipher(algorithms.AES(key), CFB(iv)).encryptor()
    sealed = encryptor.update(plaintext.encode()) + encryptor.finalize()
    return "<enc-v1>" + base64.b64encode(iv + sealed).decode()


def decrypt_v1(stored: str, key: bytes) -> str:
    """Harbor 1.4's ``ReversibleDecrypt`` of an ``<enc-v1>`` value."""
    assert stored.startswith("<enc-v1>"), stored
    blob = base64.b64decode(stored[len("<enc-v1>") :])
    decryptor = Cipher(algorithms.AES(key), CFB(blob[:16])).decryptor()
    return (decryptor.update(blob[16:]) + decryptor.finalize()).decode()


def _insert(conn: sa.Connection, sql: str, values: dict[str, Any]) -> int:
    result = conn.execute(sa.text(sql), values)
    return int(result.lastrowid)


def insert_harbor_rows(
    conn: sa.Connection,
    *,
    target_url: str,
    username: str,
    password_v1: str,
    name: str = "harborproj",
) -> dict[str, int]:
    """Rows of every shared table written with the statement Harbor's code uses: a
    project ``name`` (public, in ``project_metadata``), a target, a policy (``cron_str``,
    ``filters``) with an immediate trigger, a finished replication job, a finished scan
    job and its overview; their ids."""
    now = datetime(2018, 3, 1, 12, 0, 0)
    ids = {
        "project": _insert(
            conn,
            "insert into project (owner_id, name, creation_time, update_time, deleted) "
            "values (:owner, :name, :now, :now, 0)",
            {"owner": 1, "name": name, "now": now},
        )
    }
    _insert(
        conn,
        "insert into project_metadata (project_id, name, value, creation_time, update_time, "
        "deleted) values (:p, 'public', 'true', :now, :now, 0)",
        {"p": ids["project"], "now": now},
    )
    ids["target"] = _insert(
        conn,
        "INSERT INTO `replication_target` (`url`, `name`, `username`, `password`, "
        "`target_type`, `insecure`, `creation_time`, `update_time`) "
        "VALUES (:url, :name, :user, :password, 0, 1, :now, :now)",
        {
            "url": target_url,
            "name": f"{name}-dr",
            "user": username,
            "password": password_v1,
            "now": now,
        },
    )
    ids["policy"] = _insert(
        conn,
        "INSERT INTO `replication_policy` (`project_id`, `target_id`, `name`, `description`, "
        "`cron_str`, `filters`, `replicate_deletion`, `creation_time`, `update_time`, "
        "`deleted`) VALUES (:p, :t, :name, '', :cron, :filters, 0, :now, :now, 0)",
        {
            "p": ids["project"],
            "t": ids["target"],
            "name": f"{name}-policy",
            "cron": _MANUAL,
            "filters": _FILTERS,
            "now": now,
        },
    )
    _insert(
        conn,
        "INSERT INTO `replication_immediate_trigger` (`policy_id`, `namespace`, `on_push`, "
        "`on_deletion`, `creation_time`, `update_time`) VALUES (:p, :name, 1, 0, :now, :now)",
        {"p": ids["policy"], "name": name, "now": now},
    )
    ids["finished_job"] = _insert(
        conn,
        "INSERT INTO `replication_job` (`status`, `repository`, `policy_id`, `operation`, "
        "`tags`, `creation_time`, `update_time`) VALUES ('finished', :r, :p, 'transfer', "
        "'v0', :now, :now)",
        {"r": f"{name}/old", "p": ids["policy"], "now": now},
    )
    ids["scan_job"] = _insert(
        conn,
        "INSERT INTO `img_scan_job` (`status`, `repository`, `tag`, `digest`, "
        "`creation_time`, `update_time`) VALUES ('finished', :r, 'v0', :digest, :now, :now)",
        {"r": f"{name}/old", "digest": _digest(name), "now": now},
    )
    ids["overview"] = _insert(
        conn,
        "INSERT INTO `img_scan_overview` (`image_digest`, `scan_job_id`, `severity`, "
        "`components_overview`, `details_key`, `creation_time`, `update_time`) VALUES "
        "(:digest, :job, 1, :components, '', :now, :now)",
        {
            "digest": _digest(name),
            "job": ids["scan_job"],
            "components": '{"total":0,"summary":[]}',
            "now": now,
        },
    )
    return ids


def _digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def harbor_rows(conn: sa.Connection, columns: dict[str, list[str]]) -> dict[str, list[tuple]]:
    """Every row of each table, with only the given (Harbor's) columns, in key order."""
    rows: dict[str, list[tuple]] = {}
    for table, names in columns.items():
        listed = ", ".join(f"`{n}`" for n in names)
        result = conn.execute(sa.text(f"SELECT {listed} FROM `{table}` ORDER BY 1"))
        rows[table] = [tuple(row) for row in result]
    return rows
