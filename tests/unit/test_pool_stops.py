"""A stop that comes after a worker let go of its job is kept for the job's retry the
worker may still hand over, and forgotten after a while: a worker that wrote its job's
end itself hands nothing over, and the pool keeps no request for it."""

from __future__ import annotations

import pytest

from actors import pool_stops
from actors.handoff import EARLY_STOP_KEPT_S
from actors.pool_stops import PoolStops


class _Stops(PoolStops):
    def __init__(self) -> None:
        self.stop_after = {}


def test_a_stop_after_the_worker_let_go_is_kept_then_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(pool_stops.time, "monotonic", lambda: now[0])
    stops = _Stops()

    stops._stop_after_let_go(1)
    now[0] += EARLY_STOP_KEPT_S / 2
    stops._stop_after_let_go(2)
    assert set(stops.stop_after) == {1, 2}

    now[0] += EARLY_STOP_KEPT_S / 2 + 1
    stops._stop_after_let_go(3)
    assert set(stops.stop_after) == {2, 3}
