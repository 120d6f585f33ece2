"""``airdask dags list``, ``airdask dags trigger DAG_ID [--conf JSON]``, and the schedule
commands of :mod:`airdask.cli.schedule_cmd` (pause, unpause, backfill)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from airdask.cli import schedule_cmd
from airdask.cli.common import CliError, Group, cli_context, describe_error
from airdask.cli.sched_common import (
    check_dag_conf,
    check_executors,
    check_pools,
    conf_or_error,
    executor_names,
    ready_store,
    resolve_dag,
)
from airdask.cli.schedule_cmd import schedule_columns
from airdask.config import Config
from airdask.dagbag import DagBag
from airdask.scheduler.executors import check_dag_executors
from airdask.scheduler.runs import RunError, create_run


@click.group("dags", cls=Group)
def dags_group() -> None:
    """List DAG files, trigger, pause and backfill runs."""


for _command in schedule_cmd.commands():
    dags_group.add_command(_command)


@dags_group.command("list")
@click.option("--folder", help="Folder to read instead of [core] dags_folder.")
def dags_list(folder: str | None) -> None:
    """DAGs of [core] dags_folder with their schedule and next run, and the files that
    failed to import."""
    ctx = cli_context()
    where = folder or ctx.config.core.dags_folder
    if not Path(where).expanduser().exists():
        origin = "--folder" if folder else "[core] dags_folder"
        raise CliError(f"{origin} {where} does not exist")
    bag = DagBag.from_path(where)
    try:
        store = ctx.store()
        columns = schedule_columns(store, list(bag.dags.values()))
    except Exception as exc:  # the list is still worth showing without the database
        ctx.console.print(f"[yellow]no schedule state from the database: {describe_error(exc)}")
        columns = schedule_columns(None, list(bag.dags.values()))
    table = Table(title=f"DAGs in {where}")
    for column in ("dag_id", "tasks", "schedule", "paused", "next run", "file", "description"):
        table.add_column(column, overflow="fold")
    for dag_id in sorted(bag.dags):
        dag = bag.dags[dag_id]
        schedule, paused, nxt = columns[dag_id]
        table.add_row(
            dag_id,
            str(len(dag.tasks)),
            schedule,
            paused,
            nxt,
            bag.files[dag_id],
            dag.description or "",
        )
    ctx.console.print(table)
    problems = sorted(bag.import_errors.items()) + _executor_problems(ctx.config, bag)
    if problems:
        errors = Table(title="Import errors", title_style="bold red")
        errors.add_column("file")
        errors.add_column("error", overflow="fold")
        for path, error in problems:
            errors.add_row(path, error)
        ctx.console.print(errors)


def _executor_problems(config: Config, bag: DagBag) -> list[tuple[str, str]]:
    """(file, problem) for each task naming an executor ``[core] executor`` lacks (a run of
    it would be refused), or the one problem with ``[core] executor`` itself."""
    try:
        names = executor_names(config, None, None)
    except CliError as exc:
        return [("[core] executor", str(exc))]
    return [
        (bag.files[dag_id], problem)
        for dag_id in sorted(bag.dags)
        for problem in check_dag_executors(bag.dags[dag_id], names)
    ]


@dags_group.command("trigger")
@click.argument("dag_id")
@click.option("--conf", "conf_text", help="JSON object passed to the run.")
@click.option("--run-id", help="Run id (default: manual__<timestamp>).")
def dags_trigger(dag_id: str, conf_text: str | None, run_id: str | None) -> None:
    """Create a run that the running `airdask scheduler` picks up."""
    ctx = cli_context()
    conf = conf_or_error(conf_text)
    dag, dag_file = resolve_dag(dag_id, ctx.config)
    check_executors(dag, executor_names(ctx.config, None, None))
    check_dag_conf(dag, conf)
    store = ready_store(ctx)
    try:
        with store.session() as session:
            check_pools(session, dag)
            run = create_run(session, dag, conf=conf, run_id=run_id, dag_file=dag_file)
            new_id = run.run_id
    except RunError as exc:
        raise CliError(str(exc)) from None
    click.echo(f"triggered {dag.dag_id} run {new_id}")


def commands() -> list[click.Command]:
    return [dags_group]
