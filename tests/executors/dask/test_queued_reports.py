"""QueuedReports alone (no cluster): what is held, when it is due, what drops it."""

from __future__ import annotations

from airdask.executors.dask.queued_reports import QueuedReports
from airdask.executors.events import EventInfo
from executor_support import make_ti


def test_reports_fall_due_in_order_and_a_start_or_outcome_drops_them() -> None:
    reports = QueuedReports(2.0)
    a, b, c = (make_ti(name).key for name in "abc")
    for at, key in ((0.0, a), (0.5, b), (1.0, c)):
        assert reports.hold(key, EventInfo(key.task_id, kind="queued"), at)
    reports.settled(b)  # it started
    assert reports.due(1.9) == []
    assert [key for key, _ in reports.due(2.6)] == [a]
    reports.hold(a, EventInfo("again", kind="queued"), 2.6)  # queued again: last in line
    assert [key for key, _ in reports.due(3.0)] == [c]
    assert [info.reason for _, info in reports.due(4.6)] == ["again"]
    assert reports.due(100.0) == []


def test_no_delay_holds_nothing() -> None:
    reports = QueuedReports(0)
    assert not reports.hold(make_ti("a").key, EventInfo("x", kind="queued"), 0.0)
    assert reports.due(10.0) == []
