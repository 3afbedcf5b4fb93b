from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from model.joblog._sink import _epoch_us
from model.stamps import db_stamp, log_stamp, now_us

MOMENTS = [
    datetime(2026, 12, 1, 9, 30, 0, 123456, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2024, 2, 29, 0, 0, 0, 0, tzinfo=UTC),
    datetime(1999, 1, 1, 12, 0, 0, 500, tzinfo=UTC),
]


def _us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


@pytest.mark.parametrize("moment", MOMENTS)
def test_stamps_read_as_isoformat_writes_them(moment: datetime) -> None:
    assert log_stamp(_us(moment)) == moment.isoformat(timespec="milliseconds")
    assert db_stamp(_us(moment)) == moment.replace(tzinfo=None).isoformat(" ", "microseconds")


def test_consecutive_seconds_each_get_their_own_text() -> None:
    base = _us(MOMENTS[0])
    texts = [db_stamp(base + n * 400_000) for n in range(6)]
    assert [t[17:19] for t in texts] == ["00", "00", "00", "01", "01", "02"]


def test_now_is_the_clock_of_datetime() -> None:
    before = datetime.now(UTC)
    stamp = datetime.fromisoformat(log_stamp(now_us()))
    after = datetime.now(UTC)
    assert before - timedelta(milliseconds=1) <= stamp <= after


def test_a_log_record_time_in_another_zone_is_written_in_utc() -> None:
    local = datetime(2026, 12, 1, 10, 30, 0, 5000, tzinfo=timezone(timedelta(hours=1)))
    assert log_stamp(_epoch_us(local)) == "2026-12-01T09:30:00.005+00:00"
