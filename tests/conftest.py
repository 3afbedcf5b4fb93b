from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from mariadb import MariaDBServer, mariadb_server
from postgres import PostgresCluster, postgres_cluster

from actors import JobService
from model.kinds import JobKind
from model.settings import Settings


@pytest.fixture(autouse=True, scope="session")
def _quiet_loguru() -> Iterator[None]:
    # Job logs go to their files; the default stderr sink would only add noise.
    logger.remove()
    yield


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**values: Any) -> Settings:
        base: dict[str, Any] = {
            "database_url": f"sqlite:///{tmp_path}/jobservice.db",
            "log_dir": tmp_path / "logs",
            "key_path": tmp_path / "key",
            "retry_delay": 0.05,
            "retry_delay_max": 0.2,
        }
        base.update(values)
        return Settings(**base)

    return make


@pytest.fixture
def make_service(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., JobService]]:
    started: list[JobService] = []

    def make(kinds: list[JobKind] | tuple[JobKind, ...] = (), **values: Any) -> JobService:
        service = JobService(make_settings(**values), kinds).start()
        started.append(service)
        return service

    yield make
    for service in started:
        service.shutdown(10)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster for the whole session."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres: PostgresCluster) -> str:
    """A fresh, empty PostgreSQL database."""
    return postgres.new_database()


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDBServer]:
    """One MariaDB server for the whole session."""
    with mariadb_server() as server:
        yield server


@pytest.fixture
def mariadb_url(mariadb: MariaDBServer) -> str:
    """A fresh, empty MariaDB database."""
    return mariadb.new_database()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on a SQLite file, a real PostgreSQL database and a real
    MariaDB database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    if request.param == "mariadb":
        server: MariaDBServer = request.getfixturevalue("mariadb")
        return server.new_database()
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.new_database()
