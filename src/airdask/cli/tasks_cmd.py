"""``airdask tasks states DAG_ID RUN_ID`` and ``airdask tasks logs DAG_ID TASK_ID RUN_ID``."""

from __future__ import annotations

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from airdask.cli.common import CliError, Group, cli_context
from airdask.cli.sched_common import ready_store
from airdask.cli.ti_report import MAX_ROWS, run_report
from airdask.config import Config
from airdask.logs import log_path, read_log
from airdask.store import DagRun, TaskInstance


@click.group("tasks", cls=Group)
def tasks_group() -> None:
    """Task instance states and logs."""


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


@tasks_group.command("logs")
@click.argument("dag_id")
@click.argument("task_id")
@click.argument("run_id")
@click.option("--try", "try_number", type=int, help="Attempt number (default: the latest).")
def tasks_logs(dag_id: str, task_id: str, run_id: str, try_number: int | None) -> None:
    """The log of one attempt: from the executor while it runs, the log folder otherwise."""
    if try_number is not None and try_number < 1:
        raise CliError(f"--try must be >= 1, got {try_number}")
    ctx = cli_context()
    store = ready_store(ctx)
    with store.session() as session:
        ti = session.get(TaskInstance, (dag_id, task_id, run_id, -1))
        if ti is None:
            if session.get(DagRun, (dag_id, run_id)) is None:
                raise CliError(_no_run(session, dag_id, run_id))
            raise CliError(f"run {run_id!r} of DAG {dag_id!r} has no task {task_id!r}")
    if ti.try_number < 1:
        raise CliError(f"{dag_id}.{task_id} has not run yet in {run_id} (state {ti.state})")
    number = ti.try_number if try_number is None else try_number
    if not 1 <= number <= ti.try_number:
        raise CliError(f"{dag_id}.{task_id} has tries 1..{ti.try_number}, not {number}")
    folder = ctx.config.get("logging", "base_log_folder")
    key = ti.key.with_try_number(number)
    messages, lines = read_log(folder, key)
    if not lines and not log_path(folder, key).exists() and ti.state in ("queued", "running"):
        messages, lines = _live_log(ctx.config, ti, number) or (messages, lines)
    for message in messages:
        click.echo(f"# {message}", err=True)
    for line in lines:
        click.echo(line)


def _live_log(config: Config, ti: TaskInstance, number: int) -> tuple[list[str], list[str]] | None:
    """``executor.get_task_log`` of the configured executor, when it can reach the attempt
    from this process (an external Dask cluster); None otherwise."""
    from airdask.executors import load_executor

    if not config.get("dask", "cluster_address"):
        return None
    try:
        executor = load_executor(config=config)
        executor.start()
    except Exception as exc:
        return [f"cannot reach the executor for the live log: {exc}"], []
    try:  # an executor that did not submit the attempt still finds it where it runs
        return executor.get_task_log(ti, number)
    except Exception as exc:
        return [f"cannot read the live log through the executor: {exc}"], []
    finally:
        executor.end()  # it runs nothing of its own: this only closes its connection


def commands() -> list[click.Command]:
    return [tasks_group]
