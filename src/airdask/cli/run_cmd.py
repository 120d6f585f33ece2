"""``airdask run PATH_OR_DAG_ID``: the main job — trigger one run and schedule it to its end."""

from __future__ import annotations

import sys
import time
from collections import Counter

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select

from airdask.cli.common import CliError, Command, cli_context
from airdask.cli.sched_common import (
    build_executor,
    check_pools,
    conf_or_error,
    ready_store,
    resolve_dag,
    ti_table,
)
from airdask.scheduler.loop import PassResult, SchedulerJob
from airdask.scheduler.runs import create_run
from airdask.state import FINISHED_STATES, DagRunState
from airdask.store import DagRun, TaskInstance

FINISHED = [s.value for s in FINISHED_STATES]


@click.command("run", cls=Command)
@click.argument("target", metavar="PATH_OR_DAG_ID")
@click.option("--executor", "executor_name", help="Executor name or module.Class path.")
@click.option("--cluster", help="Address of an existing Dask scheduler (implies DaskExecutor).")
@click.option("--conf", "conf_text", help="JSON object passed to the run.")
def run_command(
    target: str, executor_name: str | None, cluster: str | None, conf_text: str | None
) -> None:
    """Trigger one run of a DAG and schedule it until it finishes.

    Exit status 0 when the run succeeds, 1 otherwise.
    """
    ctx = cli_context()
    conf = conf_or_error(conf_text)
    dag, dag_file = resolve_dag(target, ctx.config)
    store = ready_store(ctx)
    with store.session() as session:
        check_pools(session, dag)
    executor = build_executor(ctx.config, executor_name, cluster)
    job = SchedulerJob(
        store=store, executor=executor, config=ctx.config, run_filter=[], dags={dag.dag_id: dag}
    )
    job.executor_started = True
    try:
        job.register()
        with store.session() as session:
            run = create_run(
                session, dag, conf=conf, dag_file=dag_file, scheduled_by_job_id=job.job_id
            )
            run_id = run.run_id
    except Exception as exc:  # RunError and database errors alike: the job row ends failed
        job.stop(state="failed")
        raise CliError(str(exc)) from None
    job.run_filter = [(dag.dag_id, run_id)]
    console = ctx.console
    console.print(f"[bold]{dag.dag_id}[/] run [bold]{run_id}[/] on {type(executor).__name__}")
    link = getattr(executor, "dashboard_link", None)
    if link:
        console.print(f"Dask dashboard: {link}")

    state: dict[str, str | None] = {"run": None}
    total = len(dag.tasks)
    started = time.monotonic()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("running {task.fields[running]}  failed {task.fields[failed]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    bar = progress.add_task(dag.dag_id, total=total, running=0, failed=0)
    last = [0.0]

    def refresh(force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - last[0] < 0.1:
            return
        last[0] = now
        with store.session() as session:
            counts = Counter(
                dict(
                    session.execute(
                        select(TaskInstance.state, func.count())
                        .where(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == run_id)
                        .group_by(TaskInstance.state)
                    ).all()
                )
            )
            state["run"] = session.scalar(
                select(DagRun.state).where(DagRun.dag_id == dag.dag_id, DagRun.run_id == run_id)
            )
        progress.update(
            bar,
            completed=sum(counts[s] for s in FINISHED),
            running=counts["running"] + counts["queued"],
            failed=counts["failed"] + counts["upstream_failed"],
        )

    def on_pass(result: PassResult) -> None:
        refresh(force=bool(result.finished_runs))

    def finished() -> bool:
        return state["run"] in (DagRunState.SUCCESS.value, DagRunState.FAILED.value)

    with progress:
        job.run(until=finished, on_pass=on_pass)
        refresh(force=True)
    elapsed = time.monotonic() - started
    with store.session() as session:
        console.print(ti_table(session, dag.dag_id, run_id))
    outcome = state["run"]
    if outcome == DagRunState.SUCCESS.value:
        console.print(f"[green]run {run_id} succeeded[/] in {elapsed:.2f}s")
        return
    if outcome == DagRunState.FAILED.value:
        console.print(f"[red]run {run_id} failed[/] in {elapsed:.2f}s")
    else:
        console.print(
            f"[yellow]run {run_id} interrupted ({outcome})[/]: `airdask scheduler` will finish it"
        )
    sys.exit(1)


def commands() -> list[click.Command]:
    return [run_command]
