from __future__ import annotations

import shutil
import subprocess

import pytest

from model.scan.builtin.errors import UnknownEcosystem, VersionError
from model.scan.builtin.versions import apk_valid, compare, family, scheme, sort_key

DPKG_PAIRS = [
    ("1.0", "1.0"),
    ("1.0~rc1", "1.0"),
    ("1.0~~", "1.0~"),
    ("1.0~", "1.0"),
    ("1.0~beta", "1.0~alpha"),
    ("1.0", "1.0+b1"),
    ("1.0-1", "1.0-1+b1"),
    ("1.0-1", "1.0-1~bpo12+1"),
    ("1:1.0", "2.0"),
    ("0:1.0", "1.0"),
    ("2:0.1", "1:9.9"),
    ("1.0-1", "1.0-2"),
    ("1.0-10", "1.0-9"),
    ("1.0-1", "1.0-1.1"),
    ("1.0-0", "1.0"),
    ("1.0-a", "1.0-1"),
    ("1.0.0", "1.0"),
    ("1.0.", "1.0"),
    ("1.01", "1.1"),
    ("1.001", "1.1"),
    ("0.9", "0.10"),
    ("10", "9"),
    ("009", "9"),
    ("1.0a", "1.0"),
    ("1.0a", "1.0+"),
    ("1.0+dfsg", "1.0"),
    ("1.0+dfsg-1", "1.0-1"),
    ("1.0.1~", "1.0.1~0"),
    ("9.99", "10.0~rc1"),
    ("2.30-1ubuntu1", "2.30-1"),
    ("1.2.3-4+deb12u1", "1.2.3-4+deb12u2"),
    ("1.2.3-4+deb12u1", "1.2.3-4.1"),
    ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12"),
    ("1:2.36-9+deb12u4", "1:2.36-9+deb12u10"),
    ("3.0.11-1~deb12u2", "3.0.11-1"),
    ("1.0-1build1", "1.0-1ubuntu0.1"),
]


def _dpkg_says(a: str, b: str) -> int:
    for op, result in (("lt", -1), ("eq", 0)):
        if subprocess.run(["dpkg", "--compare-versions", a, op, b], check=False).returncode == 0:
            return result
    return 1


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg")
@pytest.mark.parametrize(("a", "b"), DPKG_PAIRS)
def test_dpkg_order_agrees_with_dpkg_compare_versions(a: str, b: str) -> None:
    expected = _dpkg_says(a, b)
    assert compare("Debian", a, b) == expected
    assert compare("Debian:12", b, a) == -expected


def test_dpkg_sort_key_sorts_like_compare() -> None:
    shuffled = ["1.0+b1", "1:0.5", "1.0~rc1", "1.0", "0.9-1", "1.0-1"]
    assert sorted(shuffled, key=sort_key("Debian")) == [
        "0.9-1",
        "1.0~rc1",
        "1.0",
        "1.0-1",
        "1.0+b1",
        "1:0.5",
    ]


def test_invalid_dpkg_version_raises_version_error_naming_it() -> None:
    with pytest.raises(VersionError, match=r"'1\.0 foo'"):
        compare("Debian", "1.0 foo", "1.0")


APK_PAIRS = [
    ("1.0", "1.0", 0),
    ("1.0", "1.0-r1", -1),
    ("1.0-r10", "1.0-r9", 1),
    ("1.0_alpha", "1.0_beta", -1),
    ("1.0_beta2", "1.0_pre1", -1),
    ("1.0_pre1", "1.0_rc1", -1),
    ("1.0_rc1", "1.0", -1),
    ("1.0", "1.0_cvs", -1),
    ("1.0_cvs", "1.0_svn", -1),
    ("1.0_svn", "1.0_git", -1),
    ("1.0_git20240101", "1.0_hg", -1),
    ("1.0_hg", "1.0_p1", -1),
    ("1.0_p9", "1.0_p10", -1),
    ("1.0_p1", "1.0.1", -1),
    ("1.0_alpha1", "1.0_alpha", 1),
    ("2.0_alpha_pre2", "2.0_alpha", -1),
    ("1.0a", "1.0b", -1),
    ("1.0", "1.0a", -1),
    ("1.0a", "1.0.1", -1),
    ("1.2.10", "1.2.9", 1),
    ("1.0.0", "1.0", 1),
    ("1.02", "1.1", -1),
    ("8.2.0", "8.2.001", -1),
    ("8.2.0015", "8.2.002", -1),
    ("006", "1.0.0", 1),
    ("1.0~1234", "1.0~2345", -1),
    ("1.0~1234-r1", "1.0~1234-r0", 1),
    ("1.0.0_pre20191002222144-r0", "1.0.0_pre20210530193627-r0", -1),
    ("3.1.4-r5", "3.1.4_p1-r0", -1),
    ("1.36.1-r15", "1.36.1-r2", 1),
    ("1.0_foo", "1.0", -1),
]


@pytest.mark.parametrize(("a", "b", "expected"), APK_PAIRS)
def test_apk_order_follows_apk_tools(a: str, b: str, expected: int) -> None:
    assert compare("Alpine", a, b) == expected
    assert compare("Alpine:v3.19", b, a) == -expected


@pytest.mark.parametrize(
    ("version", "valid"),
    [
        ("1.2.3_rc1-r0", True),
        ("0.1_pre2~1234abcd", True),
        ("0.1_p1_pre2", True),
        ("1.0_foo", False),
        ("1.0-r", False),
        ("0.1a1", False),
        ("0.1-r2-r3", False),
        ("", False),
        ("a", False),
    ],
)
def test_apk_validity_matches_apk_version_check(version: str, valid: bool) -> None:
    assert apk_valid(version) is valid


PEP440_PAIRS = [
    ("1.0", "1.0.0", 0),
    ("v1.0", "1.0", 0),
    ("1.0rc1", "1.0c1", 0),
    ("1.0-1", "1.0.post1", 0),
    ("1.0a1", "1.0", -1),
    ("1.0.dev0", "1.0a1", -1),
    ("1.0.post1", "1.0", 1),
    ("1.0+local", "1.0", 1),
    ("1!0.1", "2.0", 1),
    ("2.0.0", "10.0", -1),
    ("1.0b2", "1.0rc1", -1),
]


@pytest.mark.parametrize(("a", "b", "expected"), PEP440_PAIRS)
def test_pep440_order(a: str, b: str, expected: int) -> None:
    assert compare("PyPI", a, b) == expected


def test_invalid_pep440_version_raises_version_error() -> None:
    with pytest.raises(VersionError, match="not-a-version"):
        compare("PyPI", "not-a-version", "1.0")


def test_unknown_ecosystem_is_refused_with_the_known_ones() -> None:
    with pytest.raises(UnknownEcosystem, match=r"npm.*Alpine"):
        compare("npm", "1.0", "2.0")


def test_family_and_scheme_read_the_ecosystem_prefix() -> None:
    assert family("Debian:12") == "Debian"
    assert scheme("Ubuntu:22.04:LTS") == "dpkg"
    assert scheme("apk") == "apk"
