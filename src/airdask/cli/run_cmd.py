"""``airdask run PATH_OR_DAG_ID``: the main job — trigger one run and schedule it to its end."""

from __future__ import annotations

import sys

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from airdask.cli.common import CliError, Command, cli_context
from airdask.cli.sched_common import (
    build_executors,
    check_dag_conf,
    check_executors,
    check_pools,
    conf_or_error,
    executor_names,
    ready_store,
    resolve_dag,
)
from airdask.cli.ti_report import MAX_ROWS, run_report
from airdask.scheduler.loop import JobDeclaredDead, SchedulerJob
from airdask.scheduler.runs import RunError
from airdask.scheduler.single_run import RunProgress, drive_run
from airdask.state import FINISHED_STATES, DagRunState

FINISHED = [s.value for s in FINISHED_STATES]


@click.command("run", cls=Command)
@click.argument("target", metavar="PATH_OR_DAG_ID")
@click.option(
    "--executor",
    "executor_name",
    help="Executors for this run, as [core] executor lists them (the first is the default).",
)
@click.option("--cluster", help="Address of an existing Dask scheduler (implies DaskExecutor).")
@click.option("--conf", "conf_text", help="JSON object passed to the run.")
@click.option(
    "--all",
    "all_rows",
    is_flag=True,
    help=f"At the end, list every task instance (a run of more than {MAX_ROWS} is "
    "otherwise summarised by state, with the ones that did not succeed).",
)
def run_command(
    target: str,
    executor_name: str | None,
    cluster: str | None,
    conf_text: str | None,
    all_rows: bool,
) -> None:
    """Trigger one run of a DAG and schedule it until it finishes.

    Exit status 0 when the run succeeds, 1 otherwise.
    """
    ctx = cli_context()
    conf = conf_or_error(conf_text)
    dag, dag_file = resolve_dag(target, ctx.config)
    check_dag_conf(dag, conf)
    store = ready_store(ctx)
    with store.session() as session:
        check_pools(session, dag)
    check_executors(dag, executor_names(ctx.config, executor_name, cluster))
    executors = build_executors(ctx.config, executor_name, cluster)
    job = SchedulerJob(store=store, executor=executors, config=ctx.config, dags={dag.dag_id: dag})
    job.executor_started = True
    console = ctx.console

    def triggered(run_id: str) -> None:
        console.print(f"[bold]{dag.dag_id}[/] run [bold]{run_id}[/] on {executors.label()}")
        link = executors.dashboard_link
        if link:
            console.print(f"Dask dashboard: {link}")

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("running {task.fields[running]}  failed {task.fields[failed]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    bar = progress.add_task(dag.dag_id, total=len(dag.tasks), running=0, failed=0)

    def show(now: RunProgress) -> None:
        counts = now.counts
        progress.update(
            bar,
            total=max(sum(counts.values()), len(dag.tasks)),  # mapped tasks add instances
            completed=sum(counts[s] for s in FINISHED),
            running=counts["running"] + counts["queued"],
            failed=counts["failed"] + counts["upstream_failed"],
        )

    try:
        with progress:
            outcome = drive_run(
                job, dag, conf=conf, dag_file=dag_file, on_trigger=triggered, on_progress=show
            )
    except RunError as exc:
        raise CliError(str(exc)) from None
    except JobDeclaredDead as exc:
        raise CliError(str(exc)) from None
    with store.session() as session:
        for shown in run_report(session, dag.dag_id, outcome.run_id, all_rows=all_rows):
            console.print(shown)
    run_id, elapsed = outcome.run_id, outcome.elapsed
    if outcome.succeeded:
        console.print(f"[green]run {run_id} succeeded[/] in {elapsed:.2f}s")
        return
    if outcome.state == DagRunState.FAILED.value:
        console.print(f"[red]run {run_id} failed[/] in {elapsed:.2f}s")
    else:
        console.print(
            f"[yellow]run {run_id} interrupted ({outcome.state})[/]: "
            "`airdask scheduler` will finish it"
        )
    sys.exit(1)


def commands() -> list[click.Command]:
    return [run_command]
