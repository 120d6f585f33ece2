"""``airdask db init|reset|check``."""

from __future__ import annotations

import click

from airdask.cli.common import CliError, cli_context
from airdask.store import DatabaseError, check_db, init_db, reset_db


@click.group("db")
def db_group() -> None:
    """Create, reset and check the metadata database."""


@db_group.command("init")
def db_init() -> None:
    """Create the schema and default_pool (idempotent)."""
    ctx = cli_context()
    store = ctx.store()
    try:
        created = init_db(store, default_pool_slots=ctx.config.get("core", "default_pool_slots"))
    except Exception as exc:
        raise CliError(f"cannot initialise {store.engine.url!r}: {exc}") from None
    url = store.engine.url.render_as_string(hide_password=True)
    click.echo(f"{'initialised' if created else 'already initialised'}: {url}")


@db_group.command("reset")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def db_reset(yes: bool) -> None:
    """Drop every table and create them again (all history is lost)."""
    ctx = cli_context()
    store = ctx.store()
    url = store.engine.url.render_as_string(hide_password=True)
    if not yes:
        click.confirm(f"Drop all airdask tables in {url}?", abort=True)
    reset_db(store, default_pool_slots=ctx.config.get("core", "default_pool_slots"))
    click.echo(f"reset: {url}")


@db_group.command("check")
def db_check() -> None:
    """Connect and verify the schema; exit 1 if anything is missing."""
    ctx = cli_context()
    try:
        status = check_db(ctx.store())
    except DatabaseError as exc:
        raise CliError(str(exc)) from None
    if not status.ok:
        raise CliError(
            f"{status.url}: missing tables {', '.join(status.missing_tables)} "
            "(run `airdask db init`)"
        )
    click.echo(f"ok: {status.url} ({status.backend})")
