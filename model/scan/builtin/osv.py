"""A vulnerability database of OSV records (https://ossf.github.io/osv-schema/).

:meth:`VulnDB.load` reads a folder of ``*.json`` records (searched recursively), a
``.zip`` of them (as osv.dev publishes ``<ecosystem>/all.zip``) or one JSON file holding
a record or a list of records. Only the ecosystems with a version ordering in
:mod:`model.scan.builtin.versions` are indexed (Debian, Ubuntu, Alpine, PyPI); records marked
``withdrawn`` are skipped.

Records are indexed by (ecosystem family, package name); PyPI names are normalised per
PEP 503. :meth:`VulnDB.match` evaluates ``affected[].ranges`` (types ``ECOSYSTEM`` and
``SEMVER``, the latter with the ecosystem's ordering; ``GIT`` ranges are ignored) and
``affected[].versions`` exactly as the schema's evaluation pseudocode does.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.scan.builtin import versions
from model.scan.builtin.errors import ScannerError, VulnDBError
from model.scan.builtin.severity import Severity, from_cvss3, from_label

__all__ = [
    "Affected",
    "Finding",
    "Range",
    "VulnDB",
    "Vulnerability",
    "evaluate",
    "normalize_name",
    "parse_record",
    "split_ecosystem",
]

_ZERO = "0"
_EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")
_EVALUATED_RANGE_TYPES = frozenset({"ECOSYSTEM", "SEMVER"})
_PEP503 = re.compile(r"[-_.]+")


def normalize_name(family: str, name: str) -> str:
    """The index form of a package name: PEP 503 for PyPI, unchanged elsewhere."""
    if family == "PyPI":
        return _PEP503.sub("-", name).lower()
    return name


def split_ecosystem(ecosystem: str) -> tuple[str, str]:
    """``"Debian:12"`` -> ``("Debian", "12")``; ``"PyPI"`` -> ``("PyPI", "")``.

    Ubuntu's ``":LTS"`` tail is dropped (``"Ubuntu:22.04:LTS"`` -> ``("Ubuntu", "22.04")``)
    so that the release matches ``VERSION_ID`` of ``/etc/os-release``.
    """
    fam, _, release = ecosystem.partition(":")
    if fam == "Ubuntu" and release.endswith(":LTS"):
        release = release[: -len(":LTS")]
    return fam, release


@dataclass(frozen=True, slots=True)
class Range:
    """One ``affected[].ranges[]`` entry: its type and its events in file order."""

    type: str
    events: tuple[tuple[str, str], ...]  #: (kind, version); kind is introduced/fixed/…


@dataclass(frozen=True, slots=True)
class Affected:
    """One ``affected[]`` entry of a record, with the severity that applies to it."""

    family: str  #: ecosystem family, e.g. "Debian"
    release: str  #: release suffix of the ecosystem ("12", "v3.19") or "" for none
    name: str  #: package name (source package for Debian/Alpine; PEP 503 form for PyPI)
    ranges: tuple[Range, ...]
    versions: tuple[str, ...]  #: explicitly listed affected versions
    severity: Severity


@dataclass(frozen=True, slots=True)
class Vulnerability:
    """The parts of an OSV record a scan reports."""

    id: str
    description: str  #: first line of ``summary``, else of ``details``
    link: str  #: first reference URL, else the osv.dev page of the record
    affected: tuple[Affected, ...]


@dataclass(frozen=True, slots=True)
class Finding:
    """A vulnerability that affects an installed component."""

    id: str
    ecosystem: str  #: family of the component, e.g. "Debian"
    package: str  #: component name as matched (Debian/Alpine source package)
    version: str  #: installed version as matched
    fixed_version: str  #: first ``fixed`` event above ``version``, or ""
    severity: Severity
    description: str
    link: str

    def to_harbor(self) -> dict[str, Any]:
        """This finding as Harbor 1.4's ``VulnerabilityItem`` JSON object."""
        item: dict[str, Any] = {
            "id": self.id,
            "severity": int(self.severity),
            "package": self.package,
            "version": self.version,
            "description": self.description,
            "link": self.link,
        }
        if self.fixed_version:
            item["fixedVersion"] = self.fixed_version
        return item


# -- evaluation ------------------------------------------------------------------------


def _range_state(ecosystem: str, installed: str, rng: Range) -> tuple[bool, str] | None:
    """(affected, first fixed version above ``installed``) for one range.

    ``None`` when the installed version does not parse. Events whose version does not
    parse are ignored.
    """
    key = versions.sort_key(ecosystem)
    try:
        v = key(installed)
    except ScannerError:
        return None
    limits: list[Any] = []
    # (sort key, kind, parsed version or None for introduced "0", event string)
    walk: list[tuple[tuple[Any, ...], str, Any, str]] = []
    for kind, version in rng.events:
        try:
            if kind == "limit":
                limits.append(None if version == "*" else key(version))
            elif kind == "introduced" and version == _ZERO:
                # introduced "0" sorts below every version
                walk.append(((0, 0), kind, None, version))
            else:
                parsed = key(version)
                # at equal versions "introduced" goes first, so that
                # {introduced: X, fixed: X} is the empty range
                walk.append(((1, parsed, 0 if kind == "introduced" else 1), kind, parsed, version))
        except ScannerError:
            continue
    walk.sort(key=lambda item: item[0])
    fixed_above = next((raw for _, kind, ev, raw in walk if kind == "fixed" and v < ev), "")
    if limits and not any(limit is None or v < limit for limit in limits):
        return False, fixed_above
    vulnerable = False
    for _, kind, ev, _raw in walk:
        if kind == "introduced" and (ev is None or v >= ev):
            vulnerable = True
        elif (kind == "fixed" and v >= ev) or (kind == "last_affected" and v > ev):
            vulnerable = False
    return vulnerable, fixed_above


def evaluate(
    ecosystem: str, installed: str, ranges: Sequence[Range], listed: Collection[str] = ()
) -> tuple[bool, str]:
    """Whether ``installed`` is affected, and the first fixed version above it.

    Follows the OSV schema's ``IsVulnerable`` pseudocode: affected if listed in
    ``listed`` or inside any range (``ECOSYSTEM`` or ``SEMVER``; others ignored), where a
    range's events are sorted by version (``introduced: "0"`` lowest) and walked in
    order, and ``limit`` events bound the range from above. The fixed version is the
    lowest ``fixed`` event above ``installed`` over all evaluated ranges, or "".
    ``ecosystem`` chooses the version ordering (:func:`model.scan.builtin.versions.compare`).
    """
    affected = installed in listed
    fixed = ""
    if not affected and listed:
        for candidate in listed:
            try:
                if versions.compare(ecosystem, installed, candidate) == 0:
                    affected = True
                    break
            except ScannerError:
                continue
    for rng in ranges:
        if rng.type not in _EVALUATED_RANGE_TYPES:
            continue
        state = _range_state(ecosystem, installed, rng)
        if state is None:
            continue
        hit, fixed_above = state
        affected = affected or hit
        if fixed_above and (not fixed or versions.compare(ecosystem, fixed_above, fixed) < 0):
            fixed = fixed_above
    return affected, fixed


# -- records ---------------------------------------------------------------------------


def _first_line(text: object) -> str:
    if not isinstance(text, str):
        return ""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> Sequence[Any]:
    return value if isinstance(value, list) else []


def _score_severity(entries: Iterable[Any]) -> Severity | None:
    """Worst severity among ``severity[]`` entries (CVSS v3 vectors, Ubuntu priorities)."""
    found: Severity | None = None
    for entry in entries:
        entry = _dict(entry)
        kind, score = entry.get("type"), entry.get("score")
        if not isinstance(score, str):
            continue
        sev = from_cvss3(score) if kind == "CVSS_V3" else None
        if kind == "Ubuntu":
            sev = from_label(score)
        if sev is not None and sev != Severity.UNKNOWN and (found is None or sev > found):
            found = sev
    return found


def _severity(record: Mapping[str, Any], affected: Mapping[str, Any]) -> Severity:
    """Severity of ``record`` for one of its ``affected`` entries.

    Labels first, most specific first: the entry's ``ecosystem_specific.severity``,
    its ``database_specific.severity``, the record's ``database_specific.severity``,
    then the entry's ``ecosystem_specific.urgency`` (Debian's tracker urgency). A label
    of "unknown" or one not recognised lets the search go on. Then the worst CVSS v3
    base score (or Ubuntu priority) in the entry's or the record's ``severity[]``.
    Else :attr:`Severity.UNKNOWN`.
    """
    labels = (
        _dict(affected.get("ecosystem_specific")).get("severity"),
        _dict(affected.get("database_specific")).get("severity"),
        _dict(record.get("database_specific")).get("severity"),
        _dict(affected.get("ecosystem_specific")).get("urgency"),
    )
    for label in labels:
        sev = from_label(label)
        if sev is not None and sev != Severity.UNKNOWN:
            return sev
    scored = _score_severity([*_list(affected.get("severity")), *_list(record.get("severity"))])
    return scored if scored is not None else Severity.UNKNOWN


def _ranges(affected: Mapping[str, Any]) -> tuple[Range, ...]:
    out: list[Range] = []
    for rng in _list(affected.get("ranges")):
        rng = _dict(rng)
        kind = rng.get("type")
        if kind not in _EVALUATED_RANGE_TYPES:
            continue
        events: list[tuple[str, str]] = []
        for event in _list(rng.get("events")):
            for name, value in _dict(event).items():
                if name in _EVENT_KINDS and isinstance(value, str):
                    events.append((name, value))
        out.append(Range(str(kind), tuple(events)))
    return tuple(out)


def parse_record(
    record: Mapping[str, Any], families: Collection[str] | None = None
) -> Vulnerability | None:
    """The :class:`Vulnerability` in one OSV record, or ``None`` if nothing to index.

    Keeps only ``affected`` entries of supported ecosystems (and of ``families`` if
    given). ``None`` for a withdrawn record or one without such entries.
    """
    if record.get("withdrawn"):
        return None
    vuln_id = str(record["id"])
    entries: list[Affected] = []
    for item in _list(record.get("affected")):
        item = _dict(item)
        package = _dict(item.get("package"))
        ecosystem, name = package.get("ecosystem"), package.get("name")
        if not isinstance(ecosystem, str) or not isinstance(name, str):
            continue
        fam, release = split_ecosystem(ecosystem)
        if fam not in versions.SCHEMES or (families is not None and fam not in families):
            continue
        listed = tuple(v for v in _list(item.get("versions")) if isinstance(v, str))
        entries.append(
            Affected(
                family=fam,
                release=release,
                name=normalize_name(fam, name),
                ranges=_ranges(item),
                versions=listed,
                severity=_severity(record, item),
            )
        )
    if not entries:
        return None
    description = _first_line(record.get("summary")) or _first_line(record.get("details"))
    link = ""
    for ref in _list(record.get("references")):
        url = _dict(ref).get("url")
        if isinstance(url, str) and url:
            link = url
            break
    return Vulnerability(
        id=vuln_id,
        description=description,
        link=link or f"https://osv.dev/vulnerability/{vuln_id}",
        affected=tuple(entries),
    )


# -- loading ---------------------------------------------------------------------------


def _records(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, JSON bytes) of every record file under ``path``."""
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(".json"):
                    full = Path(root, name)
                    yield str(full.relative_to(path)), full.read_bytes()
        return
    if path.suffix.lower() == ".zip" and not zipfile.is_zipfile(path):
        raise VulnDBError(str(path), "not a zip archive")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.is_dir() and info.filename.endswith(".json"):
                    yield info.filename, archive.read(info)
        return
    yield path.name, path.read_bytes()


class VulnDB:
    """OSV records indexed by (ecosystem family, package name); read-only once loaded.

    Safe to share between threads once built (nothing mutates it after loading).
    """

    def __init__(self) -> None:
        self._index: dict[tuple[str, str], list[tuple[Vulnerability, Affected]]] = {}
        self._count = 0

    def __len__(self) -> int:
        """Number of records indexed."""
        return self._count

    def add(self, record: Mapping[str, Any], families: Collection[str] | None = None) -> bool:
        """Index one OSV record (a parsed JSON object); whether anything was indexed.

        Raises ``KeyError`` if the record has no ``id``.
        """
        vuln = parse_record(record, families)
        if vuln is None:
            return False
        for entry in vuln.affected:
            self._index.setdefault((entry.family, entry.name), []).append((vuln, entry))
        self._count += 1
        return True

    @classmethod
    def load(cls, path: str | os.PathLike[str], families: Collection[str] | None = None) -> VulnDB:
        """Load every OSV record under ``path`` (folder, ``.zip`` or JSON file).

        ``families`` restricts the index to those ecosystem families (e.g.
        ``{"Debian", "PyPI"}``) to save memory. Raises :class:`VulnDBError` naming the
        path and the problem if the path is missing, a file is not JSON or not an OSV
        record, the zip is corrupt, or no record at all was found.
        """
        where = Path(path)
        db = cls()
        if not where.exists():
            raise VulnDBError(str(where), "no such file or directory")
        seen = 0
        try:
            for name, raw in _records(where):
                try:
                    record = json.loads(raw)
                except ValueError as exc:
                    raise VulnDBError(str(where), f"{name}: not JSON ({exc})") from None
                for item in record if isinstance(record, list) else [record]:
                    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                        raise VulnDBError(str(where), f"{name}: not an OSV record (no 'id')")
                    db.add(item, families)
                    seen += 1
        except (OSError, zipfile.BadZipFile) as exc:
            raise VulnDBError(str(where), f"cannot read: {exc}") from None
        if seen == 0:
            raise VulnDBError(str(where), "no OSV records (*.json) found")
        return db

    def match(self, ecosystem: str, name: str, version: str) -> list[Finding]:
        """Findings for package ``name`` at ``version`` in ``ecosystem``.

        ``ecosystem`` is a family with an optional release (``"Debian:12"``,
        ``"Alpine:v3.19"``, ``"PyPI"``). Per record, the affected entries of the exact
        release are used if the record has any; else those without a release; and,
        only when the package's release is unknown (""), those of any release. A
        record affects the package if any chosen entry does (:func:`evaluate`); its
        severity is the worst of those entries', its fixed version the lowest.
        """
        fam, release = split_ecosystem(ecosystem)
        entries = self._index.get((fam, normalize_name(fam, name)), [])
        by_vuln: dict[str, tuple[Vulnerability, list[Affected]]] = {}
        for vuln, entry in entries:
            by_vuln.setdefault(vuln.id, (vuln, []))[1].append(entry)
        findings: list[Finding] = []
        for vuln, candidates in by_vuln.values():
            chosen = [e for e in candidates if release and e.release == release]
            if not chosen:
                chosen = [e for e in candidates if not e.release]
            if not chosen and not release:
                chosen = candidates
            hit = False
            severity = Severity.NONE
            fixed = ""
            for entry in chosen:
                affected, fixed_here = evaluate(fam, version, entry.ranges, entry.versions)
                if not affected:
                    continue
                hit = True
                severity = max(severity, entry.severity)
                if fixed_here and (not fixed or versions.compare(fam, fixed_here, fixed) < 0):
                    fixed = fixed_here
            if hit:
                findings.append(
                    Finding(
                        id=vuln.id,
                        ecosystem=fam,
                        package=name,
                        version=version,
                        fixed_version=fixed,
                        severity=severity,
                        description=vuln.description,
                        link=vuln.link,
                    )
                )
        return findings
