from __future__ import annotations

import pytest

from model.scan.builtin.severity import (
    Severity,
    cvss3_base_score,
    from_cvss3,
    from_label,
    from_score,
)


@pytest.mark.parametrize(
    ("vector", "score"),
    [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
        ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:C/C:H/I:N/A:N", 6.8),
        ("CVSS:3.0/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
        ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:L/A:N", 6.4),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N", 5.3),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5),
        ("CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", 1.6),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
        # metric order is free; temporal metrics are ignored
        ("CVSS:3.1/S:U/AV:N/AC:L/PR:N/UI:N/C:H/I:H/A:H/E:P/RL:O", 9.8),
    ],
)
def test_cvss3_base_score_matches_known_vectors(vector: str, score: float) -> None:
    assert cvss3_base_score(vector) == score


@pytest.mark.parametrize(
    "vector",
    [
        "AV:N/AC:L/Au:N/C:P/I:P/A:P",  # CVSS v2
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:H/UI:N/VC:L/VI:L/VA:N/SC:N/SI:N/SA:N",
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",  # A missing
        "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        "",
    ],
)
def test_malformed_or_other_cvss_vectors_give_no_score(vector: str) -> None:
    assert cvss3_base_score(vector) is None
    assert from_cvss3(vector) is None


@pytest.mark.parametrize(
    ("score", "severity"),
    [
        (0.0, Severity.NONE),
        (0.1, Severity.LOW),
        (3.9, Severity.LOW),
        (4.0, Severity.MEDIUM),
        (6.9, Severity.MEDIUM),
        (7.0, Severity.HIGH),
        (8.9, Severity.HIGH),
        (9.0, Severity.HIGH),  # critical counts as high in Harbor 1.4
        (10.0, Severity.HIGH),
    ],
)
def test_scores_map_to_harbor_scale(score: float, severity: Severity) -> None:
    assert from_score(score) == severity


@pytest.mark.parametrize(
    ("label", "severity"),
    [
        ("NEGLIGIBLE", Severity.NONE),
        ("unimportant", Severity.NONE),
        ("UNKNOWN", Severity.UNKNOWN),
        ("LOW", Severity.LOW),
        ("Medium", Severity.MEDIUM),
        ("MODERATE", Severity.MEDIUM),
        ("HIGH", Severity.HIGH),
        ("CRITICAL", Severity.HIGH),
        ("not yet assigned", None),
        (7, None),
    ],
)
def test_labels_map_to_harbor_scale(label: object, severity: Severity | None) -> None:
    assert from_label(label) == severity


def test_harbor_scale_values_are_harbor_1_4s() -> None:
    assert [int(s) for s in Severity] == [1, 2, 3, 4, 5]
