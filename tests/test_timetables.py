"""Timetables: Airflow's interval semantics, catchup, timezones and daylight saving time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from airdask.dag import DAG, DagDefinitionError
from airdask.timetables import (
    CronTimetable,
    DataInterval,
    DeltaTimetable,
    OnceTimetable,
    ScheduleError,
    make_timetable,
)

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")


def walk(tt: CronTimetable | DeltaTimetable, start: datetime, n: int) -> list[DataInterval]:
    out: list[DataInterval] = []
    last = None
    for _ in range(n):
        info = tt.next_run(
            last=last, start_date=start, now=start + timedelta(days=400), catchup=True
        )
        assert info is not None
        out.append(info.data_interval)
        last = info.data_interval
    return out


def test_daily_run_covers_the_previous_day_and_is_due_at_its_end() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    tt = make_timetable("@daily", start)
    info = tt.next_run(last=None, start_date=start, now=start, catchup=True)
    assert info is not None
    assert info.logical_date == start
    assert info.data_interval == DataInterval(start, datetime(2024, 1, 2, tzinfo=UTC))
    assert info.run_after == datetime(2024, 1, 2, tzinfo=UTC)


def test_unaligned_start_date_starts_at_the_next_cron_time() -> None:
    start = datetime(2024, 1, 1, 10, 30, tzinfo=UTC)
    info = make_timetable("0 * * * *", start).next_run(
        last=None, start_date=start, now=start, catchup=True
    )
    assert info is not None and info.logical_date == datetime(2024, 1, 1, 11, tzinfo=UTC)


def test_catchup_false_runs_only_the_latest_complete_interval() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    now = datetime(2024, 1, 10, 5, 30, tzinfo=UTC)
    tt = make_timetable("@daily", start)
    info = tt.next_run(last=None, start_date=start, now=now, catchup=False)
    assert info is not None
    assert info.data_interval == DataInterval(
        datetime(2024, 1, 9, tzinfo=UTC), datetime(2024, 1, 10, tzinfo=UTC)
    )
    # after that one, the next is the day in progress, due at its end
    nxt = tt.next_run(last=info.data_interval, start_date=start, now=now, catchup=False)
    assert nxt is not None and nxt.run_after == datetime(2024, 1, 11, tzinfo=UTC)
    # exactly on a boundary, the interval that just ended is the latest
    on = tt.next_run(
        last=None, start_date=start, now=datetime(2024, 1, 10, tzinfo=UTC), catchup=False
    )
    assert on is not None and on.logical_date == datetime(2024, 1, 9, tzinfo=UTC)


def test_catchup_true_walks_every_missed_interval() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    got = walk(CronTimetable("@hourly"), start, 3)
    assert [i.start.hour for i in got] == [0, 1, 2]
    assert all(i.end - i.start == timedelta(hours=1) for i in got)


def test_timedelta_schedule_on_a_grid_from_start_date() -> None:
    start = datetime(2024, 1, 1, 0, 10, tzinfo=UTC)
    tt = make_timetable(timedelta(minutes=30), start)
    assert tt.summary == "every 30m"
    got = walk(tt, start, 3)  # type: ignore[arg-type]
    assert [i.start.minute for i in got] == [10, 40, 10]
    info = tt.next_run(
        last=None, start_date=start, now=datetime(2024, 1, 1, 2, 0, tzinfo=UTC), catchup=False
    )
    assert info is not None and info.data_interval == DataInterval(
        datetime(2024, 1, 1, 1, 10, tzinfo=UTC), datetime(2024, 1, 1, 1, 40, tzinfo=UTC)
    )


def test_once() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    tt = make_timetable("@once", start)
    assert isinstance(tt, OnceTimetable)
    first = tt.next_run(last=None, start_date=start, now=start, catchup=False)
    assert first is not None and first.run_after == start
    assert tt.next_run(last=first.data_interval, start_date=start, now=start, catchup=False) is None


def test_daily_in_paris_runs_at_local_midnight_across_dst() -> None:
    start = datetime(2024, 3, 29, tzinfo=PARIS)
    got = walk(CronTimetable("@daily"), start, 4)
    assert [i.start.astimezone(PARIS).hour for i in got] == [0, 0, 0, 0]
    lengths = [(i.end - i.start) / timedelta(hours=1) for i in got]
    assert lengths == [24, 24, 23, 24]  # 2024-03-31 has 23 hours: the clocks go forward
    autumn = walk(CronTimetable("@daily"), datetime(2024, 10, 26, tzinfo=PARIS), 2)
    assert [(i.end - i.start) / timedelta(hours=1) for i in autumn] == [24, 25]


def test_hourly_in_paris_is_every_real_hour_across_dst() -> None:
    for day in (datetime(2024, 3, 31, tzinfo=PARIS), datetime(2024, 10, 27, tzinfo=PARIS)):
        got = walk(CronTimetable("0 * * * *"), day, 6)
        assert all(i.end - i.start == timedelta(hours=1) for i in got), got
        assert len({i.start for i in got}) == 6


def test_fixed_time_in_the_repeated_hour_fires_once() -> None:
    got = walk(CronTimetable("30 2 * * *"), datetime(2024, 10, 26, tzinfo=PARIS), 3)
    days = [i.start.astimezone(PARIS).date().day for i in got]
    assert days == [26, 27, 28]


def test_bad_schedules_are_clear_errors() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(ScheduleError, match="invalid cron expression '61 \\* \\* \\* \\*'"):
        make_timetable("61 * * * *", start)
    with pytest.raises(ScheduleError, match="naive"):
        make_timetable("@daily", datetime(2024, 1, 1))
    with pytest.raises(ScheduleError, match="needs a start_date"):
        make_timetable("@daily", None)
    with pytest.raises(ScheduleError, match="positive"):
        make_timetable(timedelta(0), start)
    with pytest.raises(DagDefinitionError, match="DAG 'x': invalid cron expression 'nope'"):
        DAG("x", schedule="nope", start_date=start)
    with pytest.raises(DagDefinitionError, match="max_active_runs must be >= 1"):
        DAG("x", max_active_runs=0)


def test_dag_timezone_follows_start_date() -> None:
    dag = DAG("tz", schedule="@daily", start_date=datetime(2024, 1, 1, tzinfo=PARIS))
    assert dag.timezone is PARIS
    assert DAG("none").timezone is None
