from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from model.scan.builtin.errors import VulnDBError
from model.scan.builtin.osv import Range, VulnDB, evaluate, normalize_name, split_ecosystem
from model.scan.builtin.severity import Severity


def rng(*events: tuple[str, str], type_: str = "ECOSYSTEM") -> Range:
    return Range(type_, tuple(events))


# -- range evaluation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("installed", "affected", "fixed"),
    [("0.1", True, "1.2"), ("1.1.9", True, "1.2"), ("1.2", False, ""), ("2.0", False, "")],
)
def test_introduced_zero_and_fixed(installed: str, affected: bool, fixed: str) -> None:
    ranges = [rng(("introduced", "0"), ("fixed", "1.2"))]
    assert evaluate("PyPI", installed, ranges) == (affected, fixed)


@pytest.mark.parametrize(
    ("installed", "affected"), [("0.9", False), ("1.0", True), ("1.1", True), ("1.2", False)]
)
def test_introduced_is_inclusive_and_fixed_exclusive(installed: str, affected: bool) -> None:
    ranges = [rng(("introduced", "1.0"), ("fixed", "1.2"))]
    assert evaluate("PyPI", installed, ranges)[0] is affected


def test_introduced_zero_covers_versions_that_sort_below_zero() -> None:
    # in dpkg "0~1" < "0", but introduced "0" means every version
    assert evaluate("Debian", "0~1", [rng(("introduced", "0"))]) == (True, "")


@pytest.mark.parametrize(
    ("installed", "affected"), [("0.9", False), ("1.5", True), ("1.5.1", False)]
)
def test_last_affected_is_inclusive(installed: str, affected: bool) -> None:
    ranges = [rng(("introduced", "1.0"), ("last_affected", "1.5"))]
    assert evaluate("PyPI", installed, ranges) == (affected, "")


@pytest.mark.parametrize(
    ("limit", "installed", "affected"),
    [("2.0", "1.9", True), ("2.0", "2.0", False), ("2.0", "3.0", False), ("*", "9.0", True)],
)
def test_limit_bounds_the_range(limit: str, installed: str, affected: bool) -> None:
    ranges = [rng(("introduced", "0"), ("limit", limit))]
    assert evaluate("PyPI", installed, ranges)[0] is affected


MULTI = [("introduced", "1.0"), ("fixed", "1.2"), ("introduced", "3.0"), ("fixed", "3.2.5")]


@pytest.mark.parametrize(
    ("installed", "affected", "fixed"),
    [
        ("0.5", False, "1.2"),
        ("1.1", True, "1.2"),
        ("2.0", False, "3.2.5"),
        ("3.1", True, "3.2.5"),
        ("3.2.5", False, ""),
    ],
)
def test_several_intervals_in_one_range(installed: str, affected: bool, fixed: str) -> None:
    assert evaluate("PyPI", installed, [rng(*MULTI)]) == (affected, fixed)


@pytest.mark.parametrize("installed", ["1.1", "3.1"])
def test_unsorted_events_are_sorted_before_the_walk(installed: str) -> None:
    unsorted = [MULTI[3], MULTI[1], MULTI[2], MULTI[0]]
    assert evaluate("PyPI", installed, [rng(*unsorted)]) == evaluate(
        "PyPI", installed, [rng(*MULTI)]
    )
    assert evaluate("PyPI", installed, [rng(*unsorted)])[0] is True


def test_several_ranges_any_one_suffices_and_lowest_fix_is_reported() -> None:
    ranges = [
        rng(("introduced", "3.0"), ("fixed", "3.2.5")),
        rng(("introduced", "1.0"), ("fixed", "1.2")),
    ]
    assert evaluate("PyPI", "3.1", ranges) == (True, "3.2.5")
    assert evaluate("PyPI", "1.0", ranges) == (True, "1.2")
    assert evaluate("PyPI", "2.0", ranges)[0] is False


def test_explicit_versions_count_even_without_ranges() -> None:
    assert evaluate("PyPI", "1.5", [], ["1.5", "1.7"]) == (True, "")
    assert evaluate("PyPI", "1.5.0", [], ["1.5"])[0] is True  # equal in PEP 440
    assert evaluate("PyPI", "1.6", [], ["1.5", "1.7"])[0] is False


def test_git_ranges_are_ignored() -> None:
    ranges = [rng(("introduced", "0"), type_="GIT")]
    assert evaluate("PyPI", "1.0", ranges) == (False, "")


def test_semver_ranges_use_the_ecosystem_order() -> None:
    ranges = [rng(("introduced", "0"), ("fixed", "2.0.0"), type_="SEMVER")]
    assert evaluate("PyPI", "2.0.0rc1", ranges) == (True, "2.0.0")


def test_introduced_and_fixed_at_the_same_version_is_empty() -> None:
    assert evaluate("PyPI", "1.0", [rng(("fixed", "1.0"), ("introduced", "1.0"))])[0] is False


def test_debian_ranges_use_dpkg_order() -> None:
    ranges = [rng(("introduced", "0"), ("fixed", "1.0-1+deb12u1"))]
    assert evaluate("Debian:12", "1.0-1", ranges) == (True, "1.0-1+deb12u1")
    assert evaluate("Debian:12", "1.0~rc1-1", ranges)[0] is True
    assert evaluate("Debian:12", "1.0-1+deb12u1", ranges)[0] is False
    assert evaluate("Debian:12", "1:0.1-1", ranges)[0] is False


def test_alpine_ranges_use_apk_order() -> None:
    ranges = [rng(("introduced", "0"), ("fixed", "1.36.1-r15"))]
    assert evaluate("Alpine:v3.19", "1.36.1-r2", ranges)[0] is True
    assert evaluate("Alpine:v3.19", "1.36.1-r15", ranges)[0] is False


def test_unparseable_installed_version_is_only_matched_by_explicit_versions() -> None:
    ranges = [rng(("introduced", "0"))]
    assert evaluate("PyPI", "not a version", ranges) == (False, "")
    assert evaluate("PyPI", "not a version", ranges, ["not a version"])[0] is True


def test_unparseable_events_are_ignored() -> None:
    ranges = [rng(("introduced", "0"), ("fixed", "garbage!"), ("fixed", "2.0"))]
    assert evaluate("PyPI", "1.5", ranges) == (True, "2.0")


# -- records and the database ----------------------------------------------------------


def record(vid: str, ecosystem: str, name: str, *events: dict[str, str], **extra: Any) -> dict:
    affected: dict[str, Any] = {
        "package": {"ecosystem": ecosystem, "name": name},
        "ranges": [{"type": "ECOSYSTEM", "events": list(events)}],
    }
    affected.update(extra.pop("affected_extra", {}))
    return {"id": vid, "affected": [affected], **extra}


def db_of(*records: dict) -> VulnDB:
    db = VulnDB()
    for item in records:
        db.add(item)
    return db


def test_finding_carries_id_fix_severity_description_and_link() -> None:
    db = db_of(
        record(
            "GHSA-xxxx",
            "PyPI",
            "Requests",
            {"introduced": "0"},
            {"fixed": "2.31.0"},
            summary="Leaks proxy credentials\nmore text",
            details="Long text",
            references=[{"type": "WEB", "url": "https://example.org/a"}],
            database_specific={"severity": "MODERATE"},
        )
    )
    (finding,) = db.match("PyPI", "requests", "2.30.0")
    assert finding.id == "GHSA-xxxx"
    assert (finding.package, finding.version, finding.fixed_version) == (
        "requests",
        "2.30.0",
        "2.31.0",
    )
    assert finding.severity == Severity.MEDIUM
    assert finding.description == "Leaks proxy credentials"
    assert finding.link == "https://example.org/a"
    assert finding.to_harbor() == {
        "id": "GHSA-xxxx",
        "severity": 4,
        "package": "requests",
        "version": "2.30.0",
        "description": "Leaks proxy credentials",
        "link": "https://example.org/a",
        "fixedVersion": "2.31.0",
    }
    assert db.match("PyPI", "requests", "2.31.0") == []


def test_description_falls_back_to_details_and_link_to_osv_dev() -> None:
    db = db_of(record("PYSEC-1", "PyPI", "x", {"introduced": "0"}, details="\n  First\nSecond"))
    (finding,) = db.match("PyPI", "x", "1.0")
    assert finding.description == "First"
    assert finding.link == "https://osv.dev/vulnerability/PYSEC-1"
    assert finding.severity == Severity.UNKNOWN
    assert "fixedVersion" not in finding.to_harbor()


def test_pypi_names_are_normalised_per_pep_503() -> None:
    db = db_of(record("V", "PyPI", "Foo.Bar_baz", {"introduced": "0"}))
    assert normalize_name("PyPI", "FOO-bar--Baz") == "foo-bar-baz"
    assert [f.id for f in db.match("PyPI", "foo_bar.BAZ", "1.0")] == ["V"]


@pytest.mark.parametrize(
    ("extra", "severity"),
    [
        ({"database_specific": {"severity": "CRITICAL"}}, Severity.HIGH),
        ({"affected_extra": {"ecosystem_specific": {"severity": "LOW"}}}, Severity.LOW),
        ({"affected_extra": {"database_specific": {"severity": "negligible"}}}, Severity.NONE),
        ({"affected_extra": {"ecosystem_specific": {"urgency": "unimportant"}}}, Severity.NONE),
        (
            {
                "severity": [
                    {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N"}
                ]
            },
            Severity.MEDIUM,
        ),
        (
            {
                "database_specific": {"severity": "UNKNOWN"},
                "severity": [
                    {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}
                ],
            },
            Severity.HIGH,
        ),
        ({"severity": [{"type": "Ubuntu", "score": "medium"}]}, Severity.MEDIUM),
        (
            {"severity": [{"type": "CVSS_V2", "score": "AV:N/AC:L/Au:N/C:P/I:P/A:P"}]},
            Severity.UNKNOWN,
        ),
        ({}, Severity.UNKNOWN),
    ],
)
def test_severity_comes_from_labels_then_cvss_v3(extra: dict, severity: Severity) -> None:
    db = db_of(record("V", "PyPI", "x", {"introduced": "0"}, **extra))
    assert db.match("PyPI", "x", "1.0")[0].severity == severity


def test_exact_release_records_are_preferred_over_unsuffixed_ones() -> None:
    vuln = {
        "id": "DEBIAN-CVE-1",
        "affected": [
            {
                "package": {"ecosystem": "Debian:12", "name": "openssl"},
                "ranges": [
                    {
                        "type": "ECOSYSTEM",
                        "events": [{"introduced": "0"}, {"fixed": "3.0.11-1~deb12u2"}],
                    }
                ],
            },
            {
                "package": {"ecosystem": "Debian:11", "name": "openssl"},
                "ranges": [
                    {
                        "type": "ECOSYSTEM",
                        "events": [{"introduced": "0"}, {"fixed": "1.1.1w-0+deb11u1"}],
                    }
                ],
            },
            {
                "package": {"ecosystem": "Debian", "name": "openssl"},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.1.0-1"}]}
                ],
            },
        ],
    }
    db = db_of(vuln)
    # Debian 12: only the Debian:12 entry counts, so 3.0.11-1~deb12u2 is fixed
    assert db.match("Debian:12", "openssl", "3.0.11-1~deb12u2") == []
    assert (
        db.match("Debian:12", "openssl", "3.0.11-1~deb12u1")[0].fixed_version == "3.0.11-1~deb12u2"
    )
    # Debian 13 has no entry of its own: the unsuffixed one applies
    assert db.match("Debian:13", "openssl", "3.0.11-1~deb12u2")[0].fixed_version == "3.1.0-1"
    assert db.match("Debian:13", "openssl", "3.1.0-1") == []
    # unknown release: the unsuffixed entry applies
    assert db.match("Debian", "openssl", "3.0.0-1")[0].fixed_version == "3.1.0-1"


def test_records_of_another_release_only_apply_when_the_release_is_unknown() -> None:
    db = db_of(
        record("ALPINE-1", "Alpine:v3.18", "busybox", {"introduced": "0"}, {"fixed": "1.36.1-r5"})
    )
    assert db.match("Alpine:v3.19", "busybox", "1.36.1-r2") == []
    assert [f.id for f in db.match("Alpine", "busybox", "1.36.1-r2")] == ["ALPINE-1"]


def test_ubuntu_lts_ecosystems_match_the_version_id() -> None:
    assert split_ecosystem("Ubuntu:22.04:LTS") == ("Ubuntu", "22.04")
    db = db_of(
        record(
            "UBUNTU-1",
            "Ubuntu:22.04:LTS",
            "curl",
            {"introduced": "0"},
            {"fixed": "7.81.0-1ubuntu1.15"},
        )
    )
    assert [f.id for f in db.match("Ubuntu:22.04", "curl", "7.81.0-1ubuntu1.14")] == ["UBUNTU-1"]


def test_withdrawn_records_and_unsupported_ecosystems_are_not_indexed() -> None:
    db = VulnDB()
    assert (
        db.add(record("W", "PyPI", "x", {"introduced": "0"}, withdrawn="2024-01-01T00:00:00Z"))
        is False
    )
    assert db.add(record("N", "npm", "x", {"introduced": "0"})) is False
    assert len(db) == 0
    assert db.match("PyPI", "x", "1.0") == []


def test_families_filter_restricts_the_index() -> None:
    db = VulnDB()
    assert db.add(record("D", "Debian:12", "x", {"introduced": "0"}), families={"PyPI"}) is False
    assert db.add(record("P", "PyPI", "x", {"introduced": "0"}), families={"PyPI"}) is True


# -- loading ---------------------------------------------------------------------------

RECORDS = [
    record("PYSEC-1", "PyPI", "a", {"introduced": "0"}, {"fixed": "2.0"}),
    record("DSA-1", "Debian:12", "b", {"introduced": "0"}, {"fixed": "1.0-2"}),
    record("ALPINE-1", "Alpine:v3.19", "c", {"introduced": "0"}, {"fixed": "1.0-r1"}),
]


def _assert_loaded(db: VulnDB) -> None:
    assert len(db) == 3
    assert [f.id for f in db.match("PyPI", "a", "1.0")] == ["PYSEC-1"]
    assert [f.id for f in db.match("Debian:12", "b", "1.0-1")] == ["DSA-1"]
    assert [f.id for f in db.match("Alpine:v3.19", "c", "1.0-r0")] == ["ALPINE-1"]


def test_loads_a_folder_recursively(tmp_path: Path) -> None:
    for i, item in enumerate(RECORDS):
        folder = tmp_path / "db" / f"sub{i}" / "deeper"
        folder.mkdir(parents=True)
        (folder / f"{item['id']}.json").write_text(json.dumps(item))
    (tmp_path / "db" / "README.txt").write_text("not a record")
    _assert_loaded(VulnDB.load(tmp_path / "db"))


def test_loads_a_zip_of_records(tmp_path: Path) -> None:
    path = tmp_path / "all.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for item in RECORDS:
            archive.writestr(f"{item['id']}.json", json.dumps(item))
    _assert_loaded(VulnDB.load(path))


def test_loads_one_json_file_with_a_list_of_records(tmp_path: Path) -> None:
    path = tmp_path / "records.json"
    path.write_text(json.dumps(RECORDS))
    _assert_loaded(VulnDB.load(str(path)))


def test_missing_database_path_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(VulnDBError, match=f"{missing}: no such file or directory") as info:
        VulnDB.load(missing)
    assert info.value.path == str(missing)


def test_a_record_that_is_not_json_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "ok.json").write_text(json.dumps(RECORDS[0]))
    (tmp_path / "db" / "broken.json").write_text("{not json")
    with pytest.raises(VulnDBError, match=r"db: broken\.json: not JSON"):
        VulnDB.load(tmp_path / "db")


def test_a_file_that_is_neither_zip_nor_json_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "db.bin"
    path.write_bytes(b"\x00\x01garbage")
    with pytest.raises(VulnDBError, match=r"db\.bin: db\.bin: not JSON"):
        VulnDB.load(path)


def test_a_corrupt_zip_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "all.zip"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(VulnDBError, match=r"all\.zip: not a zip archive"):
        VulnDB.load(path)


def test_json_that_is_not_an_osv_record_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"hello": "world"}')
    with pytest.raises(VulnDBError, match="not an OSV record"):
        VulnDB.load(path)


def test_an_empty_folder_is_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(VulnDBError, match="no OSV records"):
        VulnDB.load(tmp_path)
