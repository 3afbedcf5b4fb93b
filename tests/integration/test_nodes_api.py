"""The nodes seen from outside: two embedded services on one SQLite file, read through
``GET /api/nodes``, ``/api/stats?nodes=true``, ``/metrics``, and the ``jobservice
nodes`` and ``watch`` commands against a real HTTP server in this process."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn
from fastapi.testclient import TestClient
from registries import free_port
from typer.testing import CliRunner
from waiting import wait_until

from actors import JobService
from actors.cli.app import app as cli
from actors.http import create_app
from model.db.tables import utcnow

SECRET = "nodes-api-secret"
#: Fast beats, so that both nodes have reported their pools within a second.
NODE_SETTINGS: dict[str, Any] = {
    "ui_secret": SECRET,
    "heartbeat_interval": 0.1,
    "node_timeout": 30,
    "poll_interval": 0.2,
}


@pytest.fixture
def two_nodes(make_service: Callable[..., JobService]) -> tuple[JobService, JobService]:
    """``alpha`` and ``beta`` on one database (make_settings' SQLite file), each beaten
    at least once."""
    alpha = make_service(node_name="alpha", **NODE_SETTINGS)
    beta = make_service(node_name="beta", **NODE_SETTINGS)

    def both_beat() -> bool:
        rows = alpha.nodes()
        return len(rows) == 2 and all(row["pools"] for row in rows)

    wait_until(both_beat, timeout=10)
    return alpha, beta


def client_of(service: JobService) -> TestClient:
    client = TestClient(create_app(service), raise_server_exceptions=False)
    client.cookies.set("secret", SECRET)
    return client


@pytest.fixture
def alpha_client(two_nodes: tuple[JobService, JobService]) -> Iterator[TestClient]:
    with client_of(two_nodes[0]) as client:
        yield client


def by_name(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {node["name"]: node for node in answer["nodes"]}


def metric(text: str, line_start: str) -> float | None:
    """The value of the first ``/metrics`` line that starts with ``line_start``."""
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_api_nodes_lists_both_live_nodes_with_self_on_the_one_that_answered(
    two_nodes: tuple[JobService, JobService], alpha_client: TestClient
) -> None:
    _, beta = two_nodes
    answer = alpha_client.get("/api/nodes")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["node"] == "alpha" and body["node_timeout"] == 30
    assert [node["name"] for node in body["nodes"]] == ["beta", "alpha"]  # newest first
    nodes = by_name(body)
    assert {name: node["self"] for name, node in nodes.items()} == {"alpha": True, "beta": False}
    for node in nodes.values():
        assert node["state"] == "live" and node["dead"] is False
        assert node["ended"] is None and node["ended_by"] == ""
        assert 0 <= node["age_s"] < 30
        assert node["pools"] == {
            "replication": {"size": 3, "busy": 0},
            "scan": {"size": 3, "busy": 0},
        }
        assert node["started"].endswith("Z") or "+" in node["started"]
    assert body["totals"] == {"replication": {"size": 6, "busy": 0}, "scan": {"size": 6, "busy": 0}}

    with client_of(beta) as beta_client:
        seen_by_beta = by_name(beta_client.get("/api/nodes").json())
    assert {name: node["self"] for name, node in seen_by_beta.items()} == {
        "alpha": False,
        "beta": True,
    }


def test_stats_keep_their_pools_and_add_the_live_nodes_and_totals_on_request(
    alpha_client: TestClient,
) -> None:
    plain = alpha_client.get("/api/stats").json()
    assert set(plain) == {"replication", "scan"}
    stats = alpha_client.get("/api/stats", params={"nodes": "true"}).json()
    assert set(stats) == {"replication", "scan", "nodes", "totals"}
    assert stats["replication"]["size"] == 3 and stats["scan"]["statuses"] == {}
    assert [node["name"] for node in stats["nodes"]] == ["beta", "alpha"]
    assert set(stats["nodes"][0]) == {"name", "age_s", "dead", "pools"}
    assert stats["totals"]["scan"] == {"size": 6, "busy": 0}


def test_a_node_that_shut_down_is_listed_stopped_and_leaves_the_live_views(
    two_nodes: tuple[JobService, JobService], alpha_client: TestClient
) -> None:
    _, beta = two_nodes
    beta.shutdown(10)

    nodes = by_name(alpha_client.get("/api/nodes", params={"all": "true"}).json())
    assert nodes["beta"]["state"] == "stopped" and nodes["beta"]["ended"] is not None
    assert nodes["beta"]["dead"] is False
    assert nodes["alpha"]["state"] == "live"
    # Ended in the last hour: listed without ?all=true too, but not in the totals.
    recent = alpha_client.get("/api/nodes").json()
    assert by_name(recent)["beta"]["state"] == "stopped"
    assert recent["totals"]["replication"] == {"size": 3, "busy": 0}

    stats = alpha_client.get("/api/stats", params={"nodes": "true"}).json()
    assert [node["name"] for node in stats["nodes"]] == ["alpha"]
    assert stats["totals"] == {
        "replication": {"size": 3, "busy": 0},
        "scan": {"size": 3, "busy": 0},
    }


def test_nodes_ended_more_than_an_hour_ago_are_listed_only_with_all(
    two_nodes: tuple[JobService, JobService], alpha_client: TestClient
) -> None:
    alpha, beta = two_nodes
    beta.shutdown(10)
    long_ago = (utcnow() - timedelta(hours=2)).replace(tzinfo=None)
    engine = sa.create_engine(alpha.settings.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE node SET heartbeat = :t, ended = :t WHERE name = 'beta'"),
                {"t": long_ago},
            )
    finally:
        engine.dispose()

    assert [n["name"] for n in alpha_client.get("/api/nodes").json()["nodes"]] == ["alpha"]
    every = alpha_client.get("/api/nodes", params={"all": "true"}).json()
    assert [n["name"] for n in every["nodes"]] == ["beta", "alpha"]
    assert every["nodes"][0]["age_s"] > 3600


def test_metrics_expose_each_live_node_and_the_nodes_per_state(
    two_nodes: tuple[JobService, JobService], alpha_client: TestClient
) -> None:
    _, beta = two_nodes
    text = alpha_client.get("/metrics").text
    assert metric(text, 'jobservice_nodes{state="live"}') == 2
    assert metric(text, 'jobservice_nodes{state="dead"}') == 0
    assert metric(text, 'jobservice_nodes{state="stopped"}') == 0
    for name in ("alpha", "beta"):
        age = metric(text, f'jobservice_node_heartbeat_age_seconds{{node="{name}"}}')
        assert age is not None and 0 <= age < 30
        assert metric(text, f'jobservice_node_workers{{kind="scan",node="{name}"}}') == 3
        assert (
            metric(text, f'jobservice_node_workers_busy{{kind="replication",node="{name}"}}') == 0
        )
    assert SECRET not in text

    beta.shutdown(10)
    text = alpha_client.get("/metrics").text
    assert metric(text, 'jobservice_nodes{state="live"}') == 1
    assert metric(text, 'jobservice_nodes{state="stopped"}') == 1
    assert 'node="beta"' not in text
    assert metric(text, 'jobservice_node_workers{kind="scan",node="alpha"}') == 3


def test_openapi_documents_the_nodes_route_and_the_stats_pools(alpha_client: TestClient) -> None:
    document = alpha_client.get("/openapi.json").json()
    assert "all" in [p["name"] for p in document["paths"]["/api/nodes"]["get"]["parameters"]]
    stats = document["components"]["schemas"]["StatsOut"]
    assert stats["additionalProperties"] == {"$ref": "#/components/schemas/PoolStatsOut"}


# -- the CLI, against a real HTTP server ------------------------------------------------------


@pytest.fixture
def served_alpha(two_nodes: tuple[JobService, JobService]) -> Iterator[str]:
    """alpha's HTTP API on a free port (uvicorn in a thread); yields its URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(two_nodes[0]), host="127.0.0.1", port=port, log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=10)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def run_cli(*args: str) -> Any:
    result = CliRunner().invoke(
        cli, list(args), env={"JOBSERVICE_SECRET": SECRET, "COLUMNS": "200"}
    )
    return result


def test_the_nodes_command_names_every_node_with_its_state_and_load(
    two_nodes: tuple[JobService, JobService], served_alpha: str
) -> None:
    result = run_cli("nodes", "--url", served_alpha)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    beta_line = next(line for line in lines if " beta " in f" {line} ")
    alpha_line = next(line for line in lines if "alpha *" in line)
    for line in (alpha_line, beta_line):
        assert "live" in line and "0/3" in line
    total = next(line for line in lines if "total" in line)
    assert [cell.strip() for cell in total.strip("│ ").split("│")][-3:] == ["", "0/6", "0/6"]

    two_nodes[1].shutdown(10)
    result = run_cli("nodes", "--url", served_alpha, "--all", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert {n["name"]: n["state"] for n in answer["nodes"]} == {"alpha": "live", "beta": "stopped"}


def test_the_nodes_command_fails_with_status_1_on_a_wrong_secret(served_alpha: str) -> None:
    result = CliRunner().invoke(
        cli, ["nodes", "--url", served_alpha], env={"JOBSERVICE_SECRET": "wrong"}
    )
    assert result.exit_code == 1
    assert "403" in result.output


def test_watch_shows_the_nodes_above_the_pools(served_alpha: str) -> None:
    result = run_cli("watch", "--once", "--url", served_alpha)
    assert result.exit_code == 0, result.output
    output = result.output
    assert output.index("nodes") < output.index("pools of alpha")
    assert "alpha *" in output and "beta" in output
