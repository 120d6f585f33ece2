"""Scheduled runs: the ``dag`` table, creating runs when they are due, ``max_active_runs``.

Each pass of an ``airdask scheduler`` (not of ``airdask run``) calls :meth:`Schedules.create_due`
before it starts queued runs. That is one indexed query — DAGs not paused whose
``next_dagrun_create_after`` has come, locked ``SKIP LOCKED`` so two schedulers never create
the same run — and, per due DAG, the runs it is owed:

* with ``catchup=True`` one run per missed interval, oldest first; with ``catchup=False``
  only the latest complete interval (computed from ``now`` at creation, so a scheduler that
  was down for a week creates one run, not the one that was due a week ago);
* never more than the DAG's ``max_active_runs`` queued or running at once (the rest are
  created in later passes as runs finish);
* never a second run for a logical date that already has a scheduled or backfilled run.

A scheduled run's id is ``scheduled__<logical date, UTC ISO 8601>``; it is a queued
:class:`~airdask.store.models.DagRun` with ``logical_date`` and its data interval, started
by the usual path. Time is :attr:`Schedules.clock`, injectable, so tests advance it
instead of sleeping. :meth:`Schedules.sync` writes each known DAG's row (schedule, timezone,
next run) and is called when DAGs are loaded or their files change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from airdask.dag import DAG
from airdask.scheduler.runs import RunError, create_run
from airdask.state import DagRunState
from airdask.store.models import DagModel, DagRun, utcnow
from airdask.timetables import DataInterval, RunInfo, timezone_name

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
#: Most runs one pass creates for one DAG (a catchup of years goes on over several passes).
MAX_RUNS_PER_PASS = 64
#: Seconds a DAG whose run cannot be created (e.g. an unknown pool) is left alone.
ERROR_BACKOFF = timedelta(seconds=30)
_ACTIVE = (DagRunState.QUEUED.value, DagRunState.RUNNING.value)


def scheduled_run_id(logical_date: datetime, *, prefix: str = "scheduled") -> str:
    """``scheduled__2024-01-01T00:00:00+00:00``: one id per logical date (UTC)."""
    return f"{prefix}__{logical_date.astimezone(timezone.utc).isoformat()}"


def next_run_of(dag: DAG, last: DataInterval | None, now: datetime) -> RunInfo | None:
    """The run after the one that covered ``last``, per the DAG's timetable."""
    if dag.start_date is None:
        return None
    return dag.timetable.next_run(
        last=last, start_date=dag.start_date, now=now, catchup=dag.catchup
    )


def last_interval(row: DagModel) -> DataInterval | None:
    if row.last_data_interval_start is None or row.last_data_interval_end is None:
        return None
    return DataInterval(row.last_data_interval_start, row.last_data_interval_end)


def set_next(row: DagModel, info: RunInfo | None) -> None:
    """Record the next run on the DAG's row (None: nothing to create)."""
    row.next_dagrun = info.logical_date if info else None
    row.next_dagrun_data_interval_start = info.data_interval.start if info else None
    row.next_dagrun_data_interval_end = info.data_interval.end if info else None
    row.next_dagrun_create_after = info.run_after if info else None


def dag_row(session: Session, dag: DAG, *, now: datetime) -> DagModel:
    """The DAG's row, created or brought up to date with its definition (schedule,
    timezone, file, next run)."""
    row = session.get(DagModel, dag.dag_id)
    if row is None:
        # Another scheduler may add the same row at the same moment: whoever comes second
        # inserts nothing and updates the row the first wrote.
        session.execute(
            _insert(session)(DagModel)
            .values(dag_id=dag.dag_id, is_paused=False)
            .on_conflict_do_nothing(index_elements=["dag_id"])
        )
        row = session.get(DagModel, dag.dag_id)
        assert row is not None
    row.fileloc = dag.fileloc
    row.schedule = dag.timetable.summary
    row.timezone = timezone_name(dag.start_date)
    set_next(row, next_run_of(dag, last_interval(row), now))
    return row


def _insert(session: Session) -> Any:
    """The dialect's INSERT (both SQLite and PostgreSQL have ON CONFLICT DO NOTHING)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert
    return sqlite.insert


def run_exists(session: Session, dag_id: str, logical_date: datetime) -> bool:
    """Whether a scheduled or backfilled run of ``logical_date`` exists (manual runs do not
    count: a trigger does not stand in for the schedule)."""
    stmt = select(DagRun.run_id).where(
        DagRun.dag_id == dag_id,
        DagRun.logical_date == logical_date,
        ~DagRun.run_id.startswith("manual__"),
    )
    return session.scalar(stmt.limit(1)) is not None


def active_runs(session: Session, dag_id: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(DagRun)
            .where(DagRun.dag_id == dag_id, DagRun.state.in_(_ACTIVE))
        )
        or 0
    )


def create_interval_run(
    session: Session,
    dag: DAG,
    info: RunInfo,
    *,
    prefix: str = "scheduled",
    scheduled_by_job_id: int | None = None,
) -> DagRun:
    """A queued run of ``dag`` for ``info``'s interval (``<prefix>__<logical date>``).

    :raises airdask.scheduler.runs.RunError: the DAG's pools are wrong, or the run exists.
    """
    return create_run(
        session,
        dag,
        run_id=scheduled_run_id(info.logical_date, prefix=prefix),
        scheduled_by_job_id=scheduled_by_job_id,
        logical_date=info.logical_date,
        data_interval=(info.data_interval.start, info.data_interval.end),
    )


class Schedules:
    """The scheduling side of one scheduler job (see the module docs).

    :param clock: the current time, aware (default: the real UTC time).
    :param dag_of: the DAG of a dag_id, or None when it cannot be loaded.
    """

    def __init__(self, *, clock: Clock | None = None, dag_of: Callable[[str], DAG | None]) -> None:
        self.clock: Clock = clock or utcnow
        self.dag_of = dag_of
        self._backoff: dict[str, datetime] = {}
        #: running runs per DAG, counted once per pass (see :meth:`may_start`)
        self._running: dict[str, int] = {}

    def now(self) -> datetime:
        now = self.clock()
        if now.tzinfo is None:
            raise ValueError(f"the scheduler's clock returned a naive datetime {now!r}")
        return now

    def sync(self, session: Session, dags: Iterable[DAG]) -> None:
        """Write each DAG's row (see :func:`dag_row`)."""
        now = self.now()
        for dag in sorted(dags, key=lambda d: d.dag_id):  # one lock order for every scheduler
            dag_row(session, dag, now=now)

    def create_due(self, session: Session) -> int:
        """Create the runs that are due (see the module docs); return how many."""
        now = self.now()
        self._running = {}
        due = session.scalars(
            select(DagModel)
            .where(DagModel.is_paused.is_(False), DagModel.next_dagrun_create_after <= now)
            .order_by(DagModel.next_dagrun_create_after)
            .with_for_update(skip_locked=True)
        ).all()
        created = 0
        for row in due:
            held = self._backoff.get(row.dag_id)
            if held is not None and held > now:
                continue
            dag = self.dag_of(row.dag_id)
            if dag is None:
                continue
            try:
                created += self._create_for(session, dag, row, now)
            except RunError as exc:
                log.error("cannot create the scheduled run of %s: %s", dag.dag_id, exc)
                self._backoff[dag.dag_id] = now + ERROR_BACKOFF
        return created

    def _create_for(self, session: Session, dag: DAG, row: DagModel, now: datetime) -> int:
        active = active_runs(session, dag.dag_id)
        created = 0
        last = last_interval(row)
        info = next_run_of(dag, last, now)
        while (
            info is not None
            and info.run_after <= now
            and active < dag.max_active_runs
            and created < MAX_RUNS_PER_PASS
        ):
            if not run_exists(session, dag.dag_id, info.logical_date):
                run = create_interval_run(session, dag, info)  # writes nothing if it raises
                log.info(
                    "created %s of %s for %s .. %s",
                    run.run_id,
                    dag.dag_id,
                    info.data_interval.start.isoformat(),
                    info.data_interval.end.isoformat(),
                )
                active += 1
                created += 1
            last = info.data_interval
            row.last_data_interval_start, row.last_data_interval_end = last.start, last.end
            info = next_run_of(dag, last, now)
        set_next(row, info)
        return created

    # ---- starting queued runs ---------------------------------------------------------

    def may_start(self, session: Session, dag: DAG) -> bool:
        """Whether another run of ``dag`` may start now (fewer than ``max_active_runs``
        running); counts the one that is about to start. Counts are taken once per pass."""
        running = self._running.get(dag.dag_id)
        if running is None:
            running = int(
                session.scalar(
                    select(func.count())
                    .select_from(DagRun)
                    .where(DagRun.dag_id == dag.dag_id, DagRun.state == DagRunState.RUNNING.value)
                )
                or 0
            )
        if running >= dag.max_active_runs:
            self._running[dag.dag_id] = running
            return False
        self._running[dag.dag_id] = running + 1
        return True

    def new_pass(self) -> None:
        self._running = {}
