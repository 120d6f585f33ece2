"""``airdask pools set NAME SLOTS [--description]``, ``pools list``, ``pools delete NAME``."""

from __future__ import annotations

import click
from rich.table import Table
from sqlalchemy import func, select

from airdask.cli.common import CliError, Group, cli_context
from airdask.cli.sched_common import ready_store
from airdask.state import TaskInstanceState
from airdask.store import DEFAULT_POOL, Pool, TaskInstance
from airdask.store.queries import pool_usage

S = TaskInstanceState
IN_USE = [S.SCHEDULED.value, S.QUEUED.value, S.RUNNING.value, S.UP_FOR_RETRY.value]


@click.group("pools", cls=Group)
def pools_group() -> None:
    """Manage pools: named slot budgets shared by tasks."""


@pools_group.command("set")
@click.argument("name")
@click.argument("slots", type=int)
@click.option("--description", help="What the pool protects.")
def pools_set(name: str, slots: int, description: str | None) -> None:
    """Create pool NAME or change its slots."""
    if slots < 0:
        raise CliError(f"pool {name!r}: slots must be >= 0, got {slots}")
    if not name.strip():
        raise CliError("pool name must not be empty")
    store = ready_store(cli_context())
    with store.session() as session:
        pool = session.get(Pool, name)
        if pool is None:
            session.add(Pool(name=name, slots=slots, description=description))
            verb = "created"
        else:
            pool.slots = slots
            if description is not None:
                pool.description = description
            verb = "updated"
    click.echo(f"{verb} pool {name} ({slots} slots)")


@pools_group.command("list")
def pools_list() -> None:
    """Pools with their slots and what uses them (open = slots - running - queued)."""
    ctx = cli_context()
    store = ready_store(ctx)
    with store.session() as session:
        usage = pool_usage(session)
    table = Table(title="pools")
    for column in ("pool", "slots", "running", "queued", "open", "description"):
        table.add_column(column, justify="right" if column in ("slots", "open") else "left")
    for pool in usage.values():
        table.add_row(
            pool.name,
            str(pool.slots),
            str(pool.running),
            str(pool.queued),
            str(pool.open),
            pool.description,
        )
    ctx.console.print(table)


@pools_group.command("delete")
@click.argument("name")
def pools_delete(name: str) -> None:
    """Delete pool NAME (refused for default_pool and while tasks use it)."""
    if name == DEFAULT_POOL:
        raise CliError(f"{DEFAULT_POOL} cannot be deleted")
    store = ready_store(cli_context())
    with store.session() as session:
        pool = session.get(Pool, name)
        if pool is None:
            raise CliError(f"no pool {name!r}")
        busy = session.scalar(
            select(func.count())
            .select_from(TaskInstance)
            .where(TaskInstance.pool == name, TaskInstance.state.in_(IN_USE))
        )
        if busy:
            raise CliError(f"pool {name!r} is in use by {busy} task instance(s); not deleted")
        session.delete(pool)
    click.echo(f"deleted pool {name}")


def commands() -> list[click.Command]:
    return [pools_group]
