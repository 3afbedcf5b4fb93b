"""Severity on Harbor 1.4's scale, from a label or from a CVSS v3 vector.

Harbor 1.4 (``src/common/models/scan_job.go``) stores severities as integers:
1 none/negligible, 2 unknown, 3 low, 4 medium, 5 high; critical counts as high
(``ParseClairSev`` in ``src/common/utils/clair/utils.go``).
"""

from __future__ import annotations

import math
from enum import IntEnum

__all__ = [
    "Severity",
    "cvss3_base_score",
    "from_cvss3",
    "from_label",
    "from_score",
]


class Severity(IntEnum):
    """A component's or a vulnerability's severity, as Harbor 1.4 stores it."""

    NONE = 1  #: no known vulnerability, or a negligible one
    UNKNOWN = 2  #: vulnerable, but no database gave a severity
    LOW = 3  #: low
    MEDIUM = 4  #: medium (GitHub's "moderate")
    HIGH = 5  #: high or critical


_LABELS: dict[str, Severity] = {
    "none": Severity.NONE,
    "negligible": Severity.NONE,
    "unimportant": Severity.NONE,
    "unknown": Severity.UNKNOWN,
    "low": Severity.LOW,
    "medium": Severity.MEDIUM,
    "moderate": Severity.MEDIUM,
    "high": Severity.HIGH,
    "important": Severity.HIGH,
    "critical": Severity.HIGH,
}


def from_label(label: object) -> Severity | None:
    """The severity a database label names (``"LOW"``, ``"MODERATE"``, ``"negligible"``…).

    Case-insensitive. ``None`` for anything that is not a recognised label (including
    non-strings); ``"unknown"`` gives :attr:`Severity.UNKNOWN`.
    """
    if not isinstance(label, str):
        return None
    return _LABELS.get(label.strip().lower())


def from_score(score: float) -> Severity:
    """Harbor severity of a CVSS base score: 0 none, <4 low, <7 medium, else high.

    (CVSS calls 9.0 and up critical; Harbor 1.4 counts critical as high.)
    """
    if score <= 0.0:
        return Severity.NONE
    if score < 4.0:
        return Severity.LOW
    if score < 7.0:
        return Severity.MEDIUM
    return Severity.HIGH


# CVSS v3.x base metric weights (CVSS v3.1 specification, section 7.4).
_AV = {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2}
_AC = {"L": 0.77, "H": 0.44}
_PR_UNCHANGED = {"N": 0.85, "L": 0.62, "H": 0.27}
_PR_CHANGED = {"N": 0.85, "L": 0.68, "H": 0.5}
_UI = {"N": 0.85, "R": 0.62}
_CIA = {"H": 0.56, "L": 0.22, "N": 0.0}


def _roundup(value: float) -> float:
    """CVSS v3.1 Roundup: the smallest one-decimal number >= value, free of float noise."""
    as_int = round(value * 100_000)
    if as_int % 10_000 == 0:
        return as_int / 100_000.0
    return (math.floor(as_int / 10_000) + 1) / 10.0


def cvss3_base_score(vector: str) -> float | None:
    """The CVSS v3.0/v3.1 base score (0.0-10.0) of ``vector``, or ``None`` if malformed.

    ``vector`` is ``"CVSS:3.x/AV:_/AC:_/PR:_/UI:_/S:_/C:_/I:_/A:_"`` (metrics in any order;
    temporal and environmental metrics are ignored). Both 3.0 and 3.1 use the 3.1
    Roundup, which gives the same results without floating-point surprises.
    """
    parts = vector.strip().split("/")
    if not parts or not parts[0].startswith("CVSS:3."):
        return None
    metrics: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = part.partition(":")
        if not sep or key in metrics:
            return None
        metrics[key] = value
    try:
        scope_changed = {"U": False, "C": True}[metrics["S"]]
        av = _AV[metrics["AV"]]
        ac = _AC[metrics["AC"]]
        pr = (_PR_CHANGED if scope_changed else _PR_UNCHANGED)[metrics["PR"]]
        ui = _UI[metrics["UI"]]
        c, i, a = _CIA[metrics["C"]], _CIA[metrics["I"]], _CIA[metrics["A"]]
    except KeyError:
        return None
    iss = 1 - (1 - c) * (1 - i) * (1 - a)
    impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if scope_changed else 6.42 * iss
    if impact <= 0:
        return 0.0
    exploitability = 8.22 * av * ac * pr * ui
    if scope_changed:
        return _roundup(min(1.08 * (impact + exploitability), 10.0))
    return _roundup(min(impact + exploitability, 10.0))


def from_cvss3(vector: str) -> Severity | None:
    """Harbor severity of a CVSS v3 vector's base score, or ``None`` if malformed."""
    score = cvss3_base_score(vector)
    return None if score is None else from_score(score)
