"""``jobservice serve`` under the faults that once took it down, as a subprocess on a real
PostgreSQL database."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from postgres import PostgresCluster
from registries import ImageBuilder, RegistryServer, push_image
from test_serve import Served

from model.db import migrations

TERMINAL = {"finished", "error", "stopped", "canceled"}


@pytest.fixture
def source(tmp_path: Path) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / "source")
    server.start()
    yield server
    server.stop()


def test_a_burst_of_scans_on_an_analyzed_postgresql_table_neither_crashes_nor_strands_a_job(
    tmp_path: Path, postgres: PostgresCluster, source: RegistryServer
) -> None:
    # Once autovacuum has analyzed the job table, the claim of 3 jobs was planned as a
    # join that ran the pick again per row and took them all; the pool died of it, the
    # process exited, and every restart died the same way.
    images = ImageBuilder(tmp_path / "images")
    push_image(images, images.docker_image(), source.host, "library/app", "v1")
    url = postgres.new_database()
    migrations.upgrade(url)
    served = Served(
        tmp_path / "service",
        database_url=url,
        registry_url=source.url,
        scan_workers=3,
        max_retries=0,
    )
    served.root.mkdir()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO img_scan_job (repository, tag, digest, status, attempts, "
            "creation_time, update_time) SELECT 'library/old', 'v1', '', 'finished', 0, "
            "now(), now() FROM generate_series(1, 300)"
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE img_scan_job")
    engine.dispose()
    served.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(12) as burst:
            answers = list(
                burst.map(
                    lambda n: served.http.post(
                        "/api/jobs/scan", json={"repository": "library/app", "tag": "v1"}
                    ),
                    range(12),
                )
            )
        assert [a.status_code for a in answers] == [200] * 12, [a.text for a in answers]
        ids = [int(a.json()["job_id"]) for a in answers]
        for job_id in ids:
            served.wait_status("scan", job_id, *TERMINAL)
        assert served.process is not None and served.process.poll() is None, served.log()
        assert served.http.get("/healthz").status_code == 200
        stats = served.http.get("/api/stats").json()["scan"]
        assert stats["busy"] == 0 and stats["statuses"].get("running", 0) == 0
        assert "jobs took" not in served.log()
    finally:
        served.stop()
