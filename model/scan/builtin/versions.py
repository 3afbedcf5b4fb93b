"""Version ordering per ecosystem: dpkg (Debian, Ubuntu), apk (Alpine) and PEP 440 (PyPI).

:func:`compare` is the one entry point; :func:`sort_key` gives a key for ``sorted``.
An ecosystem may carry a release suffix (``"Debian:12"``, ``"Alpine:v3.19"``): only the
family before the first ``:`` chooses the ordering.

- dpkg: python-debian's :class:`debian.debian_support.Version`, which follows
  ``dpkg --compare-versions`` (epoch, upstream, revision; ``~`` sorts before anything).
- apk: the algorithm of apk-tools 3 (``src/version.c``), re-implemented here: digits,
  ``.digits`` (compared as strings when either has a leading zero), one letter, suffixes
  ``_alpha _beta _pre _rc`` < no suffix < ``_cvs _svn _git _hg _p`` (each with an optional
  number), ``~hash``, then ``-rN``. An apk version that does not parse still compares
  (the invalid tail sorts lowest), as apk itself does; it never raises.
- PEP 440: :class:`packaging.version.Version`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

from debian.debian_support import Version as DpkgVersion
from packaging.version import InvalidVersion
from packaging.version import Version as Pep440Version

from model.scan.builtin.errors import UnknownEcosystem, VersionError

__all__ = [
    "SCHEMES",
    "apk_valid",
    "compare",
    "compare_apk",
    "compare_dpkg",
    "compare_pep440",
    "family",
    "scheme",
    "sort_key",
]

#: Ecosystem family (the part before ``:``) -> version scheme name.
SCHEMES: dict[str, str] = {
    "Debian": "dpkg",
    "Ubuntu": "dpkg",
    "Alpine": "apk",
    "PyPI": "pep440",
}


def family(ecosystem: str) -> str:
    """The ecosystem family: ``"Debian:12"`` -> ``"Debian"``, ``"PyPI"`` -> ``"PyPI"``."""
    return ecosystem.split(":", 1)[0]


def scheme(ecosystem: str) -> str:
    """The version scheme (``dpkg``, ``apk``, ``pep440``) of ``ecosystem``.

    Scheme names are accepted as ecosystems too. Raises :class:`UnknownEcosystem`.
    """
    fam = family(ecosystem)
    found = SCHEMES.get(fam)
    if found is not None:
        return found
    if fam in _COMPARERS:
        return fam
    raise UnknownEcosystem(ecosystem, sorted(SCHEMES))


def compare(ecosystem: str, a: str, b: str) -> int:
    """Order two versions of ``ecosystem``: -1 if ``a < b``, 0 if equal, 1 if ``a > b``.

    Raises :class:`UnknownEcosystem` for an ecosystem without an ordering and
    :class:`VersionError` for a dpkg or PEP 440 version that does not parse.
    """
    return _COMPARERS[scheme(ecosystem)](a, b)


def sort_key(ecosystem: str) -> Callable[[str], Any]:
    """A key function for ``sorted(versions, key=sort_key(ecosystem))``.

    The key raises :class:`VersionError` for a dpkg or PEP 440 version that does not parse.
    """
    return _KEYS[scheme(ecosystem)]


def _order(a: Any, b: Any) -> int:
    """-1, 0 or 1 as ``a`` sorts before, with or after ``b``."""
    return -1 if a < b else (1 if a > b else 0)


# -- dpkg ------------------------------------------------------------------------------


def _dpkg_key(version: str) -> DpkgVersion:
    try:
        return DpkgVersion(version)
    except ValueError as exc:
        raise VersionError("Debian", version, str(exc)) from None


def compare_dpkg(a: str, b: str) -> int:
    """``dpkg --compare-versions`` order of ``a`` and ``b`` as -1, 0 or 1."""
    return _order(_dpkg_key(a), _dpkg_key(b))


# -- PEP 440 ---------------------------------------------------------------------------


def _pep440_key(version: str) -> Pep440Version:
    try:
        return Pep440Version(version)
    except InvalidVersion as exc:
        raise VersionError("PyPI", version, str(exc)) from None


def compare_pep440(a: str, b: str) -> int:
    """PEP 440 order of ``a`` and ``b`` as -1, 0 or 1."""
    return _order(_pep440_key(a), _pep440_key(b))


# -- apk -------------------------------------------------------------------------------

# Token kinds, in the order apk ranks them when one version runs out before the other:
# a version whose next token kind is *higher* is the *lower* version (END is high, so
# "1.0" < "1.0.1"; REVISION is high, so "1.0-r1" < "1.0.1").
_INITIAL_DIGIT, _DIGIT, _LETTER, _SUFFIX, _SUFFIX_NO, _HASH, _REVISION, _END, _INVALID = range(9)

_SUFFIX_NONE = 5
_SUFFIXES = {
    "alpha": 1,
    "beta": 2,
    "pre": 3,
    "rc": 4,
    # 5 is "no suffix"
    "cvs": 6,
    "svn": 7,
    "git": 8,
    "hg": 9,
    "p": 10,
}
_DIGITS = frozenset("0123456789")
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
_HEX = frozenset("0123456789abcdef")


class _Token(NamedTuple):
    kind: int
    text: str  # the token's characters (digits, letter, suffix name, hash)
    number: int  # digits' value or suffix rank


def _apk_tokens(version: str) -> list[_Token]:
    """Split an apk version into tokens; the last one is always END or INVALID."""
    i = _span(version, 0, _DIGITS)
    if i == 0:
        return [_Token(_INVALID, "", 0)]
    tokens = [_Token(_INITIAL_DIGIT, version[:i], int(version[:i]))]
    while i < len(version):
        step = _apk_token(version, i, tokens[-1].kind)
        if step is None:
            tokens.append(_Token(_INVALID, "", 0))
            return tokens
        token, i = step
        tokens.append(token)
    tokens.append(_Token(_END, "", 0))
    return tokens


def _span(text: str, start: int, chars: frozenset[str]) -> int:
    """Where the run of ``chars`` that starts at ``start`` in ``text`` ends."""
    end = start
    while end < len(text) and text[end] in chars:
        end += 1
    return end


def _apk_token(version: str, i: int, kind: int) -> tuple[_Token, int] | None:
    """The token at ``i`` after a token of ``kind``, and where the next one starts;
    None when the version is invalid from ``i`` on."""
    c = version[i]
    if c in _LOWER:
        return None if kind > _DIGIT else (_Token(_LETTER, c, ord(c)), i + 1)
    if c == "." or c in _DIGITS:
        return _apk_number(version, i, kind)
    if c == "_":
        if kind > _SUFFIX_NO:
            return None
        j = _span(version, i + 1, _LOWER)
        rank = _SUFFIXES.get(version[i + 1 : j])
        return None if rank is None else (_Token(_SUFFIX, version[i + 1 : j], rank), j)
    if c == "~":
        if kind >= _HASH:
            return None
        j = _span(version, i + 1, _HEX)
        return None if j == i + 1 else (_Token(_HASH, version[i + 1 : j], 0), j)
    if c == "-":
        if kind >= _REVISION or not version.startswith("-r", i):
            return None
        j = _span(version, i + 2, _DIGITS)
        if j == i + 2:
            return None
        return _Token(_REVISION, version[i + 2 : j], int(version[i + 2 : j])), j
    return None


def _apk_number(version: str, i: int, kind: int) -> tuple[_Token, int] | None:
    """A number at ``i`` (after a ``.`` for a version part, or straight after a
    suffix), as :func:`_apk_token`."""
    if version[i] == ".":
        if kind > _DIGIT:
            return None
        i += 1
    if kind in (_INITIAL_DIGIT, _DIGIT):
        kind = _DIGIT
    elif kind == _SUFFIX:
        kind = _SUFFIX_NO
    else:
        return None
    j = _span(version, i, _DIGITS)
    if j == i:
        return None
    return _Token(kind, version[i:j], int(version[i:j])), j


def _cmp(a: Any, b: Any) -> int:
    return (a > b) - (a < b)


def _token_cmp(ta: _Token, tb: _Token) -> int:
    kind = ta.kind
    if kind == _DIGIT and (ta.text[0] == "0" or tb.text[0] == "0"):
        # A leading zero makes the part a string, as in Gentoo: "1.02" < "1.1".
        return _cmp(ta.text, tb.text)
    if kind in (_INITIAL_DIGIT, _DIGIT, _SUFFIX_NO, _REVISION, _LETTER, _SUFFIX):
        return _cmp(ta.number, tb.number)
    return _cmp(ta.text, tb.text)


def _compare_apk_tokens(ta: list[_Token], tb: list[_Token]) -> int:
    i = 0
    while ta[i].kind == tb[i].kind and ta[i].kind < _END:
        r = _token_cmp(ta[i], tb[i])
        if r:
            return r
        i += 1
    a, b = ta[i], tb[i]
    if a.kind == b.kind:
        return 0
    # Equal so far: the longer version is greater unless what follows is a pre-release.
    if a.kind == _SUFFIX and a.number < _SUFFIX_NONE:
        return -1
    if b.kind == _SUFFIX and b.number < _SUFFIX_NONE:
        return 1
    return -1 if a.kind > b.kind else 1


def compare_apk(a: str, b: str) -> int:
    """``apk version -t`` order of ``a`` and ``b`` as -1, 0 or 1 (never raises)."""
    if a == b:
        return 0
    return _compare_apk_tokens(_apk_tokens(a), _apk_tokens(b))


def apk_valid(version: str) -> bool:
    """Whether ``version`` is a well-formed apk version (``apk version -c``)."""
    return _apk_tokens(version)[-1].kind == _END


_COMPARERS: dict[str, Callable[[str, str], int]] = {
    "dpkg": compare_dpkg,
    "apk": compare_apk,
    "pep440": compare_pep440,
}

_KEYS: dict[str, Callable[[str], Any]] = {
    "dpkg": _dpkg_key,
    "apk": functools.cmp_to_key(compare_apk),
    "pep440": _pep440_key,
}
