"""JobService.stop_where: every job of one kind whose columns match is stopped, waiting
ones at once and running ones through their workers; jobs of other kinds sharing the
table are left alone; a column the table lacks is refused."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from enginekinds import Gate, gated_kind

from actors import JobService
from model.errors import InvalidRequest
from model.status import Status

MakeService = Callable[..., JobService]


def test_stop_where_stops_the_kinds_waiting_and_running_jobs_and_no_other_kinds(
    make_service: MakeService,
) -> None:
    gate, other_gate = Gate(), Gate()
    service = make_service(
        [gated_kind("gated", gate, pool_size=1), gated_kind("other", other_gate, pool_size=1)]
    )
    running = service.submit("gated", {"interruptible": True})
    assert gate.wait_running(1)
    waiting = service.submit("gated", {})
    other = service.submit("other", {})
    assert other_gate.wait_running(1)

    acted = service.stop_where("gated", "maintenance")

    assert sorted(acted) == sorted([running, waiting])
    assert service.wait("gated", waiting, 10) == Status.STOPPED
    assert service.wait("gated", running, 10) == Status.STOPPED
    with open(service.log_path("gated", waiting)) as log:
        assert "state stopped (maintenance)" in log.read()
    assert service.status("other", other) == Status.RUNNING
    other_gate.opened.set()
    assert service.wait("other", other, 10) == Status.FINISHED
    assert gate.runs == {running: 1}


def test_stop_where_refuses_a_column_the_kinds_table_lacks_and_stops_nothing(
    make_service: MakeService,
) -> None:
    gate = Gate()
    service = make_service([gated_kind("gated", gate, pool_size=1)])
    first = service.submit("gated", {})
    assert gate.wait_running(1)
    queued = service.submit("gated", {})

    with pytest.raises(InvalidRequest, match="no column 'policy_id'") as refused:
        service.stop_where("gated", "maintenance", policy_id=3)

    assert refused.value.field == "policy_id"
    assert service.status("gated", queued) == Status.PENDING
    gate.opened.set()
    assert service.wait("gated", first, 10) == Status.FINISHED
    assert service.wait("gated", queued, 10) == Status.FINISHED
