"""The current UTC time as the text the job logs and SQLite store, cheap enough to
take several times a transition (``datetime.isoformat`` costs a good share of a
no-op job's transition)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["aware", "db_stamp", "log_stamp", "now_us"]

# The formatted second last asked for, per separator: (second, text). Replaced whole,
# so a thread reads either the old pair or the new one.
_seconds: dict[str, tuple[int, str]] = {}


def now_us() -> int:
    """Microseconds since the epoch, now."""
    return time.time_ns() // 1000


def _second(second: int, sep: str) -> str:
    cached = _seconds.get(sep)
    if cached is not None and cached[0] == second:
        return cached[1]
    text = time.strftime(f"%Y-%m-%d{sep}%H:%M:%S", time.gmtime(second))
    _seconds[sep] = (second, text)
    return text


def log_stamp(us: int) -> str:
    """``2026-12-01T09:30:00.123+00:00`` (milliseconds), as ``isoformat`` of an aware UTC
    datetime gives it, for ``us`` microseconds since the epoch."""
    second, fraction = divmod(us, 1_000_000)
    return f"{_second(second, 'T')}.{fraction // 1000:03d}+00:00"


def db_stamp(us: int) -> str:
    """``2026-12-01 09:30:00.123456``: SQLAlchemy's stored form of a naive UTC DateTime on
    SQLite, for ``us`` microseconds since the epoch."""
    second, fraction = divmod(us, 1_000_000)
    return f"{_second(second, ' ')}.{fraction:06d}"


def aware(value: datetime | str) -> datetime:
    """A time read from the database, with its zone: the tables hold UTC, which
    SQLite returns as naive text or datetimes and the servers as naive datetimes."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
