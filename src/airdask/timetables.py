"""Timetables: when a scheduled DAG runs, and which data interval each run covers.

Airflow's semantics (ADR 0010): a schedule cuts time into consecutive data intervals
``[start, end)``; the run for an interval is created once the interval is over, at ``end``,
and its ``logical_date`` is ``start``. A daily DAG's run for 2024-01-01 therefore starts just
after midnight of 2024-01-02 and processes the data of the 1st.

* ``schedule=None``: never scheduled (manual triggers only).
* a cron expression or preset (``"@daily"``, ``"0 6 * * 1-5"``): intervals between consecutive
  cron times, evaluated with croniter in the DAG's timezone: the timezone of its
  ``start_date`` (a :class:`zoneinfo.ZoneInfo` keeps daylight saving time right: a daily
  DAG in Europe/Paris runs at local midnight all year, and its intervals are 23 or 25
  hours long on the days the clocks change).
* a :class:`~datetime.timedelta`: intervals of that length from ``start_date`` on.
* ``"@once"``: one run, for the empty interval at ``start_date``.

Every datetime a timetable returns is in UTC (Python's arithmetic and comparisons on two
datetimes of one zone are wall-clock ones, wrong across a DST change); show them in the
DAG's zone with ``astimezone(dag.timezone)``. Pure functions of their arguments: no clock,
no database. The scheduler hands ``now`` in
(its injectable clock), so tests drive time without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from croniter import CroniterError, croniter

#: Cron presets (Airflow's), expanded before croniter sees them.
PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

Schedule = str | timedelta | None


class ScheduleError(ValueError):
    """A schedule that cannot be used: bad cron expression, non-positive timedelta, naive
    start_date."""


@dataclass(frozen=True)
class DataInterval:
    """The period a run processes, ``[start, end)``; both aware datetimes."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class RunInfo:
    """The next run to create: its logical date, data interval and when it is due."""

    logical_date: datetime
    data_interval: DataInterval

    @property
    def run_after(self) -> datetime:
        """When the run may be created: the end of its interval."""
        return self.data_interval.end


class Timetable:
    """Base class: :meth:`next_run` is the whole contract."""

    #: Shown by ``airdask dags list``.
    summary: str = ""

    def next_run(
        self,
        *,
        last: DataInterval | None,
        start_date: datetime,
        now: datetime,
        catchup: bool,
    ) -> RunInfo | None:
        """The run after the one that covered ``last`` (None: no run yet), or None when
        there is none. With ``catchup=False`` intervals that ended before the latest one
        that is over by ``now`` are skipped (only the latest complete interval is run)."""
        raise NotImplementedError

    def intervals_between(
        self, earliest: datetime, latest: datetime, *, start_date: datetime
    ) -> list[DataInterval]:
        """Every interval whose start lies in ``[earliest, latest]`` (for backfills)."""
        raise NotImplementedError


class NullTimetable(Timetable):
    """``schedule=None``: runs only when triggered."""

    summary = "None"

    def next_run(
        self, *, last: DataInterval | None, start_date: datetime, now: datetime, catchup: bool
    ) -> RunInfo | None:
        return None

    def intervals_between(
        self, earliest: datetime, latest: datetime, *, start_date: datetime
    ) -> list[DataInterval]:
        return []


class OnceTimetable(Timetable):
    """``"@once"``: one run at ``start_date``."""

    summary = "@once"

    def next_run(
        self, *, last: DataInterval | None, start_date: datetime, now: datetime, catchup: bool
    ) -> RunInfo | None:
        if last is not None:
            return None
        start = start_date.astimezone(timezone.utc)
        return RunInfo(start, DataInterval(start, start))

    def intervals_between(
        self, earliest: datetime, latest: datetime, *, start_date: datetime
    ) -> list[DataInterval]:
        start = start_date.astimezone(timezone.utc)
        return [DataInterval(start, start)] if earliest <= start <= latest else []


class _IntervalTimetable(Timetable):
    """Consecutive intervals on a grid; subclasses say where the grid points are."""

    def _next(self, after: datetime, origin: datetime) -> datetime:
        """The first grid point strictly after ``after`` (``origin``: the start_date)."""
        raise NotImplementedError

    def _prev(self, before: datetime, origin: datetime) -> datetime:
        """The last grid point strictly before ``before``."""
        raise NotImplementedError

    def _align(self, when: datetime, origin: datetime) -> datetime:
        """``when`` if it is a grid point, else the next one."""
        return self._next(when - timedelta(microseconds=1), origin)

    def next_run(
        self, *, last: DataInterval | None, start_date: datetime, now: datetime, catchup: bool
    ) -> RunInfo | None:
        origin = start_date
        now = now.astimezone(timezone.utc)
        start = last.end if last is not None else self._align(start_date, origin)
        if not catchup:
            # The latest interval that is over by now: [prev(prev-or-now), prev-or-now).
            latest_end = self._align(now, origin)
            if latest_end > now:
                latest_end = self._prev(latest_end, origin)
            latest_start = self._prev(latest_end, origin)
            start = max(start, latest_start)
        end = self._next(start, origin)
        return RunInfo(start, DataInterval(start, end))

    def intervals_between(
        self, earliest: datetime, latest: datetime, *, start_date: datetime
    ) -> list[DataInterval]:
        origin = start_date
        latest = latest.astimezone(timezone.utc)
        start = self._align(max(earliest, start_date), origin)
        out: list[DataInterval] = []
        while start <= latest:
            end = self._next(start, origin)
            out.append(DataInterval(start, end))
            start = end
        return out


class CronTimetable(_IntervalTimetable):
    """Intervals between consecutive times of a cron expression, in the DAG's timezone.

    On the night the clocks go back a wall-clock time happens twice. An expression with
    fixed hours (``"30 1 * * *"``) fires once, at the first of them, as a person reading it
    expects; one whose hour field repeats (``"0 * * * *"``, ``"*/15 2 * * *"``) fires in
    each real hour."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        cron = PRESETS.get(expression, expression)
        try:
            if not croniter.is_valid(cron):
                raise ScheduleError(f"invalid cron expression {expression!r}")
            croniter(cron)
        except CroniterError as exc:
            raise ScheduleError(f"invalid cron expression {expression!r}: {exc}") from None
        self.cron = cron
        fields = cron.split()
        self.summary = expression
        hours = fields[1] if len(fields) > 1 else "*"
        self._hourly = "*" in hours or "/" in hours or "-" in hours

    def _next(self, after: datetime, origin: datetime) -> datetime:
        it = croniter(self.cron, after.astimezone(origin.tzinfo))
        while True:
            found: datetime = it.get_next(datetime)
            if found.fold and not self._hourly and _ambiguous(found):
                continue  # the second time of a repeated wall-clock time (see class doc)
            found = found.astimezone(timezone.utc)
            if found > after:
                return found

    def _prev(self, before: datetime, origin: datetime) -> datetime:
        it = croniter(self.cron, before.astimezone(origin.tzinfo))
        while True:
            found: datetime = it.get_prev(datetime)
            if found.fold and not self._hourly and _ambiguous(found):
                continue
            found = found.astimezone(timezone.utc)
            if found < before:
                return found


def _ambiguous(when: datetime) -> bool:
    """Whether ``when``'s wall-clock time also exists with the other fold."""
    return when.replace(fold=1 - when.fold).utcoffset() != when.utcoffset()


class DeltaTimetable(_IntervalTimetable):
    """Intervals of a fixed length, on a grid starting at ``start_date``."""

    def __init__(self, delta: timedelta) -> None:
        if delta <= timedelta(0):
            raise ScheduleError(f"a timedelta schedule must be positive, got {delta!r}")
        self.delta = delta
        self.summary = _describe_delta(delta)

    def _grid(self, when: datetime, origin: datetime, *, strictly_after: bool) -> datetime:
        # In UTC: aware arithmetic within one zone is wall-clock arithmetic in Python.
        origin, when = origin.astimezone(timezone.utc), when.astimezone(timezone.utc)
        steps = (when - origin) // self.delta
        point = origin + steps * self.delta
        if strictly_after:
            return point + self.delta
        return point if point < when else point - self.delta

    def _next(self, after: datetime, origin: datetime) -> datetime:
        return self._grid(after, origin, strictly_after=True)

    def _prev(self, before: datetime, origin: datetime) -> datetime:
        return self._grid(before, origin, strictly_after=False)


def _describe_delta(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"every {seconds // size}{unit}"
    return f"every {delta.total_seconds():g}s"


def make_timetable(schedule: Schedule, start_date: datetime | None) -> Timetable:
    """The timetable of a DAG's ``schedule``; :class:`ScheduleError` names what is wrong."""
    if schedule is None:
        return NullTimetable()
    if start_date is None:
        raise ScheduleError(f"schedule {schedule!r} needs a start_date")
    if start_date.tzinfo is None or start_date.utcoffset() is None:
        raise ScheduleError(
            f"start_date {start_date.isoformat()} is naive: give it a timezone, e.g. "
            "datetime(2024, 1, 1, tzinfo=ZoneInfo('Europe/Paris')) or tzinfo=timezone.utc "
            "(the DAG's schedule is evaluated in that zone)"
        )
    if isinstance(schedule, timedelta):
        return DeltaTimetable(schedule)
    if isinstance(schedule, str):
        if schedule == "@once":
            return OnceTimetable()
        return CronTimetable(schedule.strip())
    raise ScheduleError(
        f"schedule must be a cron string, a preset, a timedelta or None, got {schedule!r}"
    )


def timezone_name(when: datetime | None) -> str:
    """The name of ``when``'s timezone (``"UTC"`` for None or UTC)."""
    if when is None or when.tzinfo is None:
        return "UTC"
    key = getattr(when.tzinfo, "key", None)
    return str(key) if key else (when.tzname() or "UTC")


__all__ = [
    "PRESETS",
    "CronTimetable",
    "DataInterval",
    "DeltaTimetable",
    "NullTimetable",
    "OnceTimetable",
    "RunInfo",
    "ScheduleError",
    "Timetable",
    "make_timetable",
    "timezone_name",
]
