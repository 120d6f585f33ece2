"""Backfills: runs for the intervals of a period, created and driven to their end here.

``airdask dags backfill DAG --start S --end E`` is :func:`plan_backfill`, then
:func:`run_backfill`: one ``backfill__<logical date>`` run per interval whose logical date
lies in ``[S, E]`` and that is over by now, except those a scheduled or backfilled run
already covers. The runs go through the scheduler's normal path in a job that owns them (as
``airdask run``'s does, so a running ``airdask scheduler`` leaves them alone), and at most the
DAG's ``max_active_runs`` of them run at once, oldest first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from airdask.dag import DAG
from airdask.scheduler.claims import RunKey, in_runs
from airdask.scheduler.loop import SchedulerJob
from airdask.scheduler.schedules import create_interval_run, run_exists
from airdask.state import DagRunState
from airdask.store.models import DagRun
from airdask.timetables import DataInterval, RunInfo

_FINISHED = (DagRunState.SUCCESS.value, DagRunState.FAILED.value)


class BackfillError(ValueError):
    """A backfill that cannot be made: no schedule, an empty or inverted period."""


@dataclass
class BackfillPlan:
    dag: DAG
    #: intervals that get a run
    intervals: list[DataInterval] = field(default_factory=list)
    #: intervals left out: a run already covers them
    existing: list[DataInterval] = field(default_factory=list)
    #: intervals left out: not over yet
    future: list[DataInterval] = field(default_factory=list)


def plan_backfill(
    session: Session, dag: DAG, *, start: datetime, end: datetime, now: datetime
) -> BackfillPlan:
    """Which intervals of ``[start, end]`` (by logical date) get a run."""
    if dag.start_date is None or dag.schedule is None:
        raise BackfillError(f"DAG {dag.dag_id!r} has no schedule: there are no intervals to fill")
    if end < start:
        raise BackfillError(f"--end {end.isoformat()} is before --start {start.isoformat()}")
    plan = BackfillPlan(dag)
    for interval in dag.timetable.intervals_between(start, end, start_date=dag.start_date):
        if interval.end > now:
            plan.future.append(interval)
        elif run_exists(session, dag.dag_id, interval.start):
            plan.existing.append(interval)
        else:
            plan.intervals.append(interval)
    return plan


def create_backfill_runs(session: Session, plan: BackfillPlan, *, job_id: int) -> list[RunKey]:
    """Queued ``backfill__`` runs for the plan's intervals, owned by job ``job_id``."""
    keys: list[RunKey] = []
    for interval in plan.intervals:
        run = create_interval_run(
            session,
            plan.dag,
            RunInfo(interval.start, interval),
            prefix="backfill",
            scheduled_by_job_id=job_id,
        )
        keys.append((run.dag_id, run.run_id))
    return keys


def run_backfill(
    job: SchedulerJob,
    plan: BackfillPlan,
    *,
    on_created: Callable[[list[RunKey]], None] | None = None,
    handle_signals: bool = True,
) -> dict[RunKey, str | None]:
    """Register ``job``, create the plan's runs and schedule them to their end; return each
    run's final state (running/queued when interrupted).

    :raises airdask.scheduler.runs.RunError: a run cannot be created (pools); nothing is
        then written but the job's failed row.
    """
    job.run_filter = []  # before register(): the job is a run's, never a scheduler
    job.register()
    assert job.job_id is not None
    try:
        with job.store.session() as session:
            keys = create_backfill_runs(session, plan, job_id=job.job_id)
    except Exception:
        job.stop(state="failed")
        raise
    job.run_filter = keys
    if on_created is not None:
        on_created(keys)
    if not keys:
        job.stop()
        return {}

    def finished() -> bool:
        return all(state in _FINISHED for state in states(job, keys).values())

    job.run(until=finished, handle_signals=handle_signals)
    return states(job, keys)


def states(job: SchedulerJob, keys: list[RunKey]) -> dict[RunKey, str | None]:
    with job.store.session() as session:
        rows = session.execute(
            select(DagRun.dag_id, DagRun.run_id, DagRun.state).where(in_runs(keys))
        ).all()
    found = {(dag_id, run_id): state for dag_id, run_id, state in rows}
    return {key: found.get(key) for key in keys}
