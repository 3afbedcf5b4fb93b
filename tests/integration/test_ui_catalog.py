"""The dashboard's catalog forms in-process (FastAPI's TestClient), without a browser:
a form the catalog accepts redirects, one it refuses comes back with the message next
to the field the HTTP API's answer names."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from actors.http import create_app
from actors.service import JobService
from model.settings import Settings

SECRET = "ui-catalog-secret"


@pytest.fixture
def ui(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(database_url=f"sqlite:///{tmp_path}/ui.db", ui_secret=SECRET)
    service = JobService(settings).start()
    try:
        with TestClient(create_app(service), raise_server_exceptions=False) as client:
            client.cookies.set("secret", SECRET)
            yield client
    finally:
        service.shutdown(10)


def post(ui: TestClient, path: str, **fields: Any) -> Any:
    """Posts the form at ``path`` with the CSRF token of its page."""
    page = ui.get(path.removesuffix("/delete"))
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return ui.post(path, data={"csrf": found.group(1), **fields}, follow_redirects=False)


def field_error(page: str, name: str) -> str:
    found = re.search(rf'id="error-{name}"[^>]*>([^<]*)<', page)
    return found.group(1) if found else ""


def test_forms_save_or_come_back_with_the_refusal_next_to_its_field(ui: TestClient) -> None:
    assert post(ui, "/ui/projects", name="library", public="on").status_code == 303
    taken = post(ui, "/ui/projects", name="library")
    assert taken.status_code == 400
    assert field_error(taken.text, "name").startswith("name: a project named")
    added = post(ui, "/ui/targets", name="dr", url="http://dr:5000", password="pw")
    assert added.status_code == 303
    long_url = "http://" + "r" * 80
    refused = post(ui, "/ui/targets", name="dr2", url=long_url)
    assert refused.status_code == 400 and field_error(refused.text, "url")
    project = ui.get("/api/projects").json()[0]["id"]
    target = ui.get("/api/targets").json()[0]["id"]
    fields = {"name": "to-dr", "project_id": str(project), "target_id": str(target)}
    policy = post(ui, "/ui/policies", enabled="on", **fields)
    assert policy.status_code == 303, policy.text
    missing = post(ui, "/ui/policies", **{**fields, "name": "x", "target_id": "999"})
    assert missing.status_code == 400
    assert field_error(missing.text, "target_id").startswith("target_id: replication target")
    ident = policy.headers["location"].split("?")[0].rsplit("/", 1)[1]
    renamed = post(ui, f"/ui/policies/{ident}", **{**fields, "name": "renamed"})
    assert renamed.status_code == 303
    assert ui.get(f"/api/policies/replication/{ident}").json()["name"] == "renamed"
    assert 'id="error-' not in ui.get("/ui/projects").text
