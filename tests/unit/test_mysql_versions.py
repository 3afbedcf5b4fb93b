from __future__ import annotations

import pytest

from model.db._mysql import unsupported


@pytest.mark.parametrize(
    "version",
    [
        "10.6.0-MariaDB",
        "10.11.19-MariaDB-0+deb12u1",
        "5.5.5-10.11.6-MariaDB-1:10.11.6+maria~ubu2204",
        "11.4.2-MariaDB",
        "8.0.1",
        "8.0.36-0ubuntu0.22.04.1",
        "9.1.0",
    ],
)
def test_servers_with_skip_locked_are_taken(version: str) -> None:
    assert unsupported(version) is None


@pytest.mark.parametrize(
    ("version", "named"),
    [
        ("10.2.10-MariaDB", "MariaDB 10.2.10; this jobservice needs MariaDB 10.6 or later"),
        ("5.5.5-10.5.23-MariaDB", "MariaDB 10.5.23; this jobservice needs MariaDB 10.6"),
        ("5.7.44-log", "MySQL 5.7.44; this jobservice needs MySQL 8.0.1 or later"),
        ("8.0.0-dmr", "MySQL 8.0.0; this jobservice needs MySQL 8.0.1"),
    ],
)
def test_servers_without_skip_locked_are_refused_naming_the_version_needed(
    version: str, named: str
) -> None:
    reason = unsupported(version)
    assert reason is not None and named in reason and "SKIP LOCKED" in reason


def test_a_version_that_cannot_be_read_is_refused_saying_so() -> None:
    assert unsupported("unknown") == "cannot read the database server's version 'unknown'"
