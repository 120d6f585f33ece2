"""``airdask scheduler``: the long-running scheduler process with the configured executor."""

from __future__ import annotations

import click

from airdask.cli.common import CliError, Command, cli_context
from airdask.cli.sched_common import build_executors, ready_store, refuse_second_sqlite_scheduler
from airdask.scheduler.jobs import SchedulerConflict
from airdask.scheduler.loop import JobDeclaredDead, SchedulerJob


@click.command("scheduler", cls=Command)
@click.option(
    "--executor",
    "executor_name",
    help="Executors to host, as [core] executor lists them (the first is the default).",
)
@click.option("--cluster", help="Address of an existing Dask scheduler (implies DaskExecutor).")
def scheduler_command(executor_name: str | None, cluster: str | None) -> None:
    """Run the scheduler loop until SIGTERM/SIGINT: picks up triggered runs, hands ready
    task instances to the executor, records outcomes, recovers after crashes.

    Several schedulers may run at once on one PostgreSQL database (they share the work and
    take over from one that dies); on SQLite a second one is refused."""
    ctx = cli_context()
    store = ready_store(ctx)
    refuse_second_sqlite_scheduler(ctx, store)  # before starting an executor for nothing
    wait = ctx.config.scheduler.executor_start_timeout  # a daemon outlives a cluster restart
    executors = build_executors(ctx.config, executor_name, cluster, wait_for_cluster=wait)
    job = SchedulerJob(store=store, executor=executors, config=ctx.config)
    job.executor_started = True
    job_id = job.register()
    ctx.console.print(f"scheduler job {job_id} running {executors.label()}")
    link = executors.dashboard_link
    if link:
        ctx.console.print(f"Dask dashboard: {link}")
    try:
        job.run()
    except (SchedulerConflict, JobDeclaredDead) as exc:
        raise CliError(str(exc)) from None
    ctx.console.print(f"scheduler job {job_id} stopped")


def commands() -> list[click.Command]:
    return [scheduler_command]
