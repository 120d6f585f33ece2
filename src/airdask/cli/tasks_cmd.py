"""``airdask tasks states DAG_ID RUN_ID``, ``tasks logs``, ``tasks render`` and
``tasks result DAG_ID TASK_ID RUN_ID``."""

from __future__ import annotations

import json
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from airdask.cli.common import CliError, Group, cli_context
from airdask.cli.sched_common import ready_store, resolve_dag
from airdask.cli.ti_report import MAX_ROWS, run_report
from airdask.config import Config
from airdask.logs import log_exists, read_log
from airdask.store import DagRun, TaskInstance


@click.group("tasks", cls=Group)
def tasks_group() -> None:
    """Task instance states, logs, rendered commands and results."""


@tasks_group.command("states")
@click.argument("dag_id")
@click.argument("run_id")
@click.option(
    "--all",
    "all_rows",
    is_flag=True,
    help=f"List every task instance (a run of more than {MAX_ROWS} is otherwise summarised "
    "by state, with the ones that did not succeed).",
)
def tasks_states(dag_id: str, run_id: str, all_rows: bool) -> None:
    """Every task instance of a run: state, tries, duration, host, reason."""
    ctx = cli_context()
    store = ready_store(ctx)
    with store.session() as session:
        run = session.get(DagRun, (dag_id, run_id))
        if run is None:
            raise CliError(_no_run(session, dag_id, run_id))
        title = f"{dag_id} / {run_id}: {run.state}"
        for shown in run_report(session, dag_id, run_id, title=title, all_rows=all_rows):
            ctx.console.print(shown)


def _no_run(session: Session, dag_id: str, run_id: str) -> str:
    runs = session.scalars(
        select(DagRun.run_id).where(DagRun.dag_id == dag_id).order_by(DagRun.queued_at.desc())
    ).all()
    if not runs:
        return f"DAG {dag_id!r} has no runs"
    return f"DAG {dag_id!r} has no run {run_id!r} (latest: {runs[0]})"


def _no_ti(session: Session, dag_id: str, task_id: str, run_id: str, map_index: int) -> str:
    indexes = session.scalars(
        select(TaskInstance.map_index).where(
            TaskInstance.dag_id == dag_id,
            TaskInstance.run_id == run_id,
            TaskInstance.task_id == task_id,
        )
    ).all()
    if not indexes:
        return f"run {run_id!r} of DAG {dag_id!r} has no task {task_id!r}"
    if map_index < 0:
        return (
            f"{dag_id}.{task_id} is mapped in {run_id}: name an instance with --map-index "
            f"{min(indexes)}..{max(indexes)}"
        )
    return f"{dag_id}.{task_id} in {run_id} has no --map-index {map_index}"


@tasks_group.command("logs")
@click.argument("dag_id")
@click.argument("task_id")
@click.argument("run_id")
@click.option("--try", "try_number", type=int, help="Attempt number (default: the latest).")
@click.option(
    "--map-index", type=int, default=-1, show_default=True, help="Instance of a mapped task."
)
def tasks_logs(
    dag_id: str, task_id: str, run_id: str, try_number: int | None, map_index: int
) -> None:
    """The log of one attempt: from the executor while it runs, the log folder otherwise."""
    if try_number is not None and try_number < 1:
        raise CliError(f"--try must be >= 1, got {try_number}")
    ctx = cli_context()
    store = ready_store(ctx)
    with store.session() as session:
        ti = session.get(TaskInstance, (dag_id, task_id, run_id, map_index))
        if ti is None:
            if session.get(DagRun, (dag_id, run_id)) is None:
                raise CliError(_no_run(session, dag_id, run_id))
            raise CliError(_no_ti(session, dag_id, task_id, run_id, map_index))
    if ti.try_number < 1:
        raise CliError(f"{dag_id}.{task_id} has not run yet in {run_id} (state {ti.state})")
    number = ti.try_number if try_number is None else try_number
    if not 1 <= number <= ti.try_number:
        raise CliError(f"{dag_id}.{task_id} has tries 1..{ti.try_number}, not {number}")
    folder = ctx.config.logging.base_log_folder
    key = ti.key.with_try_number(number)
    messages, lines = read_log(folder, key)
    if not lines and not log_exists(folder, key) and ti.state in ("queued", "running"):
        messages, lines = _live_log(ctx.config, ti, number) or (messages, lines)
    for message in messages:
        click.echo(f"# {message}", err=True)
    for line in lines:
        click.echo(line)


def _live_log(config: Config, ti: TaskInstance, number: int) -> tuple[list[str], list[str]] | None:
    """``executor.get_task_log`` of the executor the attempt was queued on (of those in
    ``[core] executor``; the default when none is recorded), when it can reach the attempt
    from this process (Celery workers, an external Dask cluster); None otherwise."""
    from airdask.executors.loader import BUILTIN_EXECUTORS, configured_names, load_executors

    try:
        names = configured_names(config)
        name = next((n for n in names if n.id == ti.executor), names[0])
        # Only where attempts can be reached from here without starting anything: Celery
        # workers through their broker, or an external Dask cluster (not an embedded one).
        celery = name.module_path == BUILTIN_EXECUTORS["CeleryExecutor"]
        if not (celery or config.dask.cluster_address):
            return None
        [(_, executor)] = load_executors([name], config=config)
        executor.start()
    except Exception as exc:
        return [f"cannot reach the executor for the live log: {exc}"], []
    try:  # an executor that did not submit the attempt still finds it where it runs
        return executor.get_task_log(ti, number)
    except Exception as exc:
        return [f"cannot read the live log through the executor: {exc}"], []
    finally:
        executor.end()  # it runs nothing of its own: this only closes its connection


@tasks_group.command("render")
@click.argument("dag_id")
@click.argument("task_id")
@click.argument("run_id")
@click.option("--map-index", type=int, default=-1, show_default=True)
def tasks_render(dag_id: str, task_id: str, run_id: str, map_index: int) -> None:
    """The command of a task instance as its attempt runs it: templates rendered from the
    run's context (its last try, or the next one if it has not run)."""
    from airdask.commands import PythonCommand
    from airdask.context import CONTEXT_KEYS
    from airdask.scheduler.attempts import AttemptCommands, AttemptError

    ctx = cli_context()
    store = ready_store(ctx)
    with store.session() as session:
        ti = _ti_or_error(session, dag_id, task_id, run_id, map_index)
        run = session.get(DagRun, (dag_id, run_id))
        dag, _ = resolve_dag(run.dag_file if run and run.dag_file else dag_id, ctx.config)
        if dag.dag_id != dag_id or not dag.has_task(task_id):
            raise CliError(f"DAG {dag_id!r} has no task {task_id!r} any more")
        builder = AttemptCommands(max_result_bytes=ctx.config.core.max_result_bytes)
        try:
            command = builder.build(session, dag, ti, try_number=ti.try_number or 1)
        except AttemptError as exc:
            raise CliError(str(exc)) from None
    header = getattr(command, "header", None)
    if isinstance(command, PythonCommand):
        args = [repr(a) for a in command.args]
        own = getattr(dag.get_task(task_id), "op_kwargs", {})
        given = {k: v for k, v in command.kwargs.items() if k in own or k not in CONTEXT_KEYS}
        given.pop("context", None)
        args += [f"{k}={v!r}" for k, v in given.items()]
        added = " + the run context" if len(given) < len(command.kwargs) else ""
        click.echo(f"{header}({', '.join(args)}){added}")
    else:
        click.echo(header or " ".join(command))


@tasks_group.command("result")
@click.argument("dag_id")
@click.argument("task_id")
@click.argument("run_id")
@click.option(
    "--map-index", type=int, default=None, help="One mapped instance (default: every one)."
)
def tasks_result(dag_id: str, task_id: str, run_id: str, map_index: int | None) -> None:
    """The return value a task kept (JSON when it is JSON, else its repr); for a mapped
    task, the list of its instances' values."""
    from airdask.scheduler.results import MissingResultError, result_of, results_for

    ctx = cli_context()
    store = ready_store(ctx)
    with store.session() as session:
        if session.get(DagRun, (dag_id, run_id)) is None:
            raise CliError(_no_run(session, dag_id, run_id))
        try:
            if map_index is None:
                value = results_for(session, (dag_id, run_id), task_id)
            else:
                value = result_of(session, (dag_id, run_id), task_id, map_index)
        except MissingResultError as exc:
            raise CliError(str(exc)) from None
    click.echo(_show(value))


def _show(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)


def _ti_or_error(
    session: Session, dag_id: str, task_id: str, run_id: str, map_index: int
) -> TaskInstance:
    ti = session.get(TaskInstance, (dag_id, task_id, run_id, map_index))
    if ti is None:
        if session.get(DagRun, (dag_id, run_id)) is None:
            raise CliError(_no_run(session, dag_id, run_id))
        raise CliError(f"run {run_id!r} of DAG {dag_id!r} has no task {task_id!r}")
    return ti


def commands() -> list[click.Command]:
    return [tasks_group]
