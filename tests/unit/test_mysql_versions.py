from __future__ import annotations

import pytest

from model.db._mysql import skips_locked_rows, unsupported


@pytest.mark.parametrize(
    ("version", "skip_locked"),
    [
        ("10.2.10-MariaDB", False),  # Harbor 1.4's own database server
        ("5.5.5-10.5.23-MariaDB", False),
        ("10.6.0-MariaDB", True),
        ("10.11.19-MariaDB-0+deb12u1", True),
        ("5.5.5-10.11.6-MariaDB-1:10.11.6+maria~ubu2204", True),
        ("11.4.2-MariaDB", True),
        ("8.0.1", True),
        ("8.0.36-0ubuntu0.22.04.1", True),
        ("9.1.0", True),
    ],
)
def test_servers_are_taken_and_known_to_skip_locked_rows_or_not(
    version: str, skip_locked: bool
) -> None:
    assert unsupported(version) is None
    assert skips_locked_rows(version) is skip_locked


@pytest.mark.parametrize(
    ("version", "named"),
    [
        ("10.1.48-MariaDB", "MariaDB 10.1.48; this jobservice needs MariaDB 10.2 or later"),
        ("5.5.5-10.0.38-MariaDB", "MariaDB 10.0.38; this jobservice needs MariaDB 10.2"),
        ("5.7.44-log", "MySQL 5.7.44; this jobservice needs MySQL 8.0.1 or later"),
        ("8.0.0-dmr", "MySQL 8.0.0; this jobservice needs MySQL 8.0.1"),
    ],
)
def test_older_servers_are_refused_naming_the_version_needed(version: str, named: str) -> None:
    reason = unsupported(version)
    assert reason is not None and named in reason


def test_a_version_that_cannot_be_read_is_refused_saying_so() -> None:
    assert unsupported("unknown") == "cannot read the database server's version 'unknown'"
    assert skips_locked_rows("unknown") is False
