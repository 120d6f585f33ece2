"""``airdask dags pause|unpause DAG`` and ``airdask dags backfill DAG --start --end``, and
the schedule columns of ``airdask dags list`` (added to the ``dags`` group by
:mod:`airdask.cli.dags_cmd`)."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any

import click
from rich.table import Table
from sqlalchemy import inspect, select

from airdask.cli.common import CliError, Command, cli_context
from airdask.cli.sched_common import (
    STATE_STYLES,
    build_executors,
    check_executors,
    check_pools,
    executor_names,
    ready_store,
    resolve_dag,
)
from airdask.dag import DAG
from airdask.scheduler.backfill import BackfillError, plan_backfill, run_backfill
from airdask.scheduler.loop import JobDeclaredDead, SchedulerJob
from airdask.scheduler.runs import RunError
from airdask.scheduler.schedules import dag_row, next_run_of
from airdask.store import DagModel, Store, utcnow


def _set_paused(dag_id: str, paused: bool) -> None:
    ctx = cli_context()
    dag, _ = resolve_dag(dag_id, ctx.config)
    store = ready_store(ctx)
    with store.session() as session:
        row = dag_row(session, dag, now=utcnow())
        row.is_paused = paused
    click.echo(f"{'paused' if paused else 'unpaused'} {dag.dag_id}")


@click.command("pause", cls=Command)
@click.argument("dag_id", metavar="DAG_ID_OR_PATH")
def dags_pause(dag_id: str) -> None:
    """Stop creating scheduled runs of a DAG (runs already created go on; triggers too)."""
    _set_paused(dag_id, True)


@click.command("unpause", cls=Command)
@click.argument("dag_id", metavar="DAG_ID_OR_PATH")
def dags_unpause(dag_id: str) -> None:
    """Create scheduled runs of a DAG again (with catchup, the intervals missed meanwhile)."""
    _set_paused(dag_id, False)


def parse_when(text: str, what: str, dag: DAG) -> datetime:
    """An ISO 8601 date or datetime; one without a timezone is in the DAG's timezone."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"{what} {text!r} is not an ISO 8601 date or datetime (e.g. 2024-01-31 or "
            "2024-01-31T06:00+01:00)"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dag.timezone or timezone.utc)
    return value


@click.command("backfill", cls=Command)
@click.argument("dag_id", metavar="DAG_ID_OR_PATH")
@click.option("--start", "start_text", required=True, help="First logical date (ISO 8601).")
@click.option("--end", "end_text", required=True, help="Last logical date, included.")
@click.option(
    "--executor",
    "executor_name",
    help="Executors for these runs, as [core] executor lists them (the first is the default).",
)
@click.option("--cluster", help="Address of an existing Dask scheduler (implies DaskExecutor).")
@click.option("--dry-run", is_flag=True, help="List the intervals, create nothing.")
def dags_backfill(
    dag_id: str,
    start_text: str,
    end_text: str,
    executor_name: str | None,
    cluster: str | None,
    dry_run: bool,
) -> None:
    """Create a run for every interval whose logical date is in [--start, --end] and run
    them to their end here (at most max_active_runs at once). Dates without a timezone are
    in the DAG's. Intervals that already have a scheduled or backfilled run are left out.

    Exit status 0 when every run succeeds, 1 otherwise."""
    ctx = cli_context()
    dag, _ = resolve_dag(dag_id, ctx.config)
    start = parse_when(start_text, "--start", dag)
    end = parse_when(end_text, "--end", dag)
    store = ready_store(ctx)
    try:
        with store.session() as session:
            check_pools(session, dag)
            plan = plan_backfill(session, dag, start=start, end=end, now=utcnow())
    except BackfillError as exc:
        raise CliError(str(exc)) from None
    console = ctx.console
    tz = dag.timezone or timezone.utc
    for interval in plan.existing:
        console.print(f"{_when(interval.start, tz)}: already has a run, left out")
    if plan.future:
        console.print(
            f"{len(plan.future)} interval(s) from {_when(plan.future[0].start, tz)} on are not "
            "over yet: left out"
        )
    if not plan.intervals:
        console.print(f"nothing to backfill for {dag.dag_id} in {start_text} .. {end_text}")
        return
    if dry_run:
        for interval in plan.intervals:
            console.print(f"would run {_when(interval.start, tz)} .. {_when(interval.end, tz)}")
        return
    check_executors(dag, executor_names(ctx.config, executor_name, cluster))
    executors = build_executors(ctx.config, executor_name, cluster)
    job = SchedulerJob(store=store, executor=executors, config=ctx.config, dags={dag.dag_id: dag})
    job.executor_started = True

    def created(keys: list[tuple[str, str]]) -> None:
        console.print(
            f"[bold]{dag.dag_id}[/]: backfilling {len(keys)} run(s) on {executors.label()} "
            f"(at most {dag.max_active_runs} at once)"
        )

    try:
        final = run_backfill(job, plan, on_created=created)
    except (RunError, JobDeclaredDead) as exc:
        raise CliError(str(exc)) from None
    table = Table(title=f"backfill of {dag.dag_id}")
    table.add_column("run")
    table.add_column("state")
    for (_, run_id), state in final.items():
        style = STATE_STYLES.get(state or "", "")
        table.add_row(run_id, f"[{style}]{state}[/]" if style else str(state))
    console.print(table)
    if any(state != "success" for state in final.values()):
        sys.exit(1)


def _when(value: datetime | None, tz: Any) -> str:
    if value is None:
        return ""
    return value.astimezone(tz).isoformat(timespec="minutes")


def schedule_columns(store: Store | None, dags: list[DAG]) -> dict[str, tuple[str, str, str]]:
    """``{dag_id: (schedule, paused, next run)}`` for ``dags list``: the scheduler's record
    where it has one, else what the timetable says now."""
    rows: dict[str, DagModel] = {}
    if store is not None and "dag" in inspect(store.engine).get_table_names():
        with store.session() as session:
            stmt = select(DagModel).where(DagModel.dag_id.in_([d.dag_id for d in dags]))
            rows = {found.dag_id: found for found in session.scalars(stmt)}
    now = utcnow()
    out: dict[str, tuple[str, str, str]] = {}
    for dag in dags:
        tz = dag.timezone or timezone.utc
        row = rows.get(dag.dag_id)
        paused = "yes" if row is not None and row.is_paused else "no"
        if row is not None:
            logical, after = row.next_dagrun, row.next_dagrun_create_after
        else:
            info = next_run_of(dag, None, now)
            logical, after = (info.logical_date, info.run_after) if info else (None, None)
        nxt = f"{_when(logical, tz)} (at {_when(after, tz)})" if logical is not None else ""
        schedule = dag.timetable.summary
        if dag.schedule is not None and dag.timezone is not None:
            schedule += f" {getattr(dag.timezone, 'key', None) or dag.timezone}"
        out[dag.dag_id] = (schedule, paused, nxt)
    return out


def commands() -> list[click.Command]:
    """The commands :mod:`airdask.cli.dags_cmd` adds to its group."""
    return [dags_pause, dags_unpause, dags_backfill]
