"""The catalog's rules hold for a program using the store directly, without HTTP."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from model.catalog import (
    MAX_TARGET_PASSWORD_BYTES,
    MAX_TARGET_URL_CHARS,
    Catalog,
    InUse,
    NameTaken,
    Triggers,
)
from model.crypto import SecretBox
from model.db import Store
from model.db.tables import ReplicationTarget
from model.errors import InvalidRequest, NotFound


@pytest.fixture
def catalog(database_url: str) -> Iterator[Catalog]:
    store = Store(database_url)
    store.create_all()
    yield Catalog(store, SecretBox(os.urandom(32)))
    store.close()


def test_a_taken_project_or_target_name_raises_name_taken_from_the_unique_constraint(
    catalog: Catalog,
) -> None:
    first = catalog.add_project("library", public=True)
    with pytest.raises(NameTaken) as taken:
        catalog.add_project("library", public=False)
    assert taken.value.ident == first.id and taken.value.name == "library"
    other = catalog.add_project("other", public=False)
    with pytest.raises(NameTaken):
        catalog.update_project(int(other.id or 0), name="library")
    catalog.add_target("dr", "http://dr:5000", "robot", "pw", insecure=False)
    with pytest.raises(NameTaken):
        catalog.add_target("dr", "http://other:5000", "", "", insecure=False)


def test_rows_a_policy_uses_are_in_use_and_a_missing_reference_names_its_field(
    catalog: Catalog,
) -> None:
    project = catalog.add_project("library", public=True)
    target = catalog.add_target("dr", "http://dr:5000", "robot", "pw", insecure=False)
    assert target.password != "pw"
    policy = catalog.add_policy(name="to-dr", project_id=project.id, target_id=target.id)
    with pytest.raises(NameTaken):
        catalog.add_policy(name="to-dr", project_id=project.id, target_id=target.id)
    with pytest.raises(NotFound) as missing:
        catalog.add_policy(name="x", project_id=project.id, target_id=999)
    assert missing.value.field == "target_id"
    assert catalog.projects_in_use() == {project.id}
    with pytest.raises(InUse) as used:
        catalog.delete_project(int(project.id or 0))
    assert used.value.users == [policy.id]
    with pytest.raises(InUse):
        catalog.delete_target(int(target.id or 0))
    catalog.delete_policy(int(policy.id or 0))
    with pytest.raises(NotFound):
        catalog.policy(int(policy.id or 0))
    assert catalog.projects_in_use() == set()
    catalog.delete_target(int(target.id or 0))
    catalog.delete_project(int(project.id or 0))


def test_a_policy_and_its_triggers_are_checked_before_anything_is_written(
    catalog: Catalog,
) -> None:
    project = catalog.add_project("library", public=True)
    target = catalog.add_target("dr", "http://dr:5000", "", "", insecure=False)
    refs = {"project_id": project.id, "target_id": target.id}
    with pytest.raises(InvalidRequest) as bad:
        catalog.add_policy(name="nightly", schedule="not cron", **refs)
    assert bad.value.field == "schedule"
    with pytest.raises(InvalidRequest):
        catalog.add_policy(name="nightly", schedule="0 2 * * *", timezone="Nowhere/City", **refs)
    assert catalog.policies() == [] and catalog.schedules() == []
    policy = catalog.add_policy(
        name="nightly", schedule="0 2 * * *", timezone="Europe/Paris", on_push=True, **refs
    )
    ident = int(policy.id or 0)
    triggers = catalog.triggers(ident)
    assert (triggers.schedule, triggers.timezone, triggers.on_push) == (
        "0 2 * * *",
        "Europe/Paris",
        True,
    )
    # A bad schedule or time zone (with the schedule kept) changes neither the policy
    # nor its triggers.
    with pytest.raises(InvalidRequest):
        catalog.update_policy(ident, name="renamed", schedule="61 * * * *")
    with pytest.raises(InvalidRequest):
        catalog.update_policy(ident, name="renamed", timezone="Nowhere/City")
    assert catalog.policy(ident).name == "nightly"
    assert catalog.triggers(ident) == triggers
    updated = catalog.update_policy(ident, name="renamed", schedule=None, on_push=False)
    assert updated.name == "renamed"
    assert catalog.triggers(ident) == Triggers()
    with pytest.raises(NotFound):
        catalog.update_policy(999, on_delete=True)


def test_a_target_url_or_password_beyond_harbors_columns_is_refused_naming_it(
    catalog: Catalog,
) -> None:
    longest_url = "http://" + "r" * (MAX_TARGET_URL_CHARS - len("http://"))
    longest_password = "p" * MAX_TARGET_PASSWORD_BYTES
    target = catalog.add_target("dr", longest_url, "robot", longest_password, insecure=False)
    assert len(target.password) <= 128
    assert catalog.box.decrypt(catalog.store.get(ReplicationTarget, target.id).password) == (
        longest_password
    )
    with pytest.raises(InvalidRequest, match="url: must be at most 64 characters"):
        catalog.add_target("far", longest_url + "x", "", "", insecure=False)
    with pytest.raises(InvalidRequest, match="password: must be at most 62 bytes"):
        catalog.add_target("long", "http://dr:5000", "", longest_password + "p", insecure=False)
    with pytest.raises(InvalidRequest, match="url"):
        catalog.update_target(int(target.id or 0), url=longest_url + "x")
    with pytest.raises(InvalidRequest, match="password"):
        catalog.update_target(int(target.id or 0), password="é" * 32)
    assert [t.name for t in catalog.store.list_rows(ReplicationTarget)] == ["dr"]
