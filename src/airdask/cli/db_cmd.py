"""``airdask db init|reset|check``."""

from __future__ import annotations

import click

from airdask.cli.common import CliError, Group, cli_context, describe_error
from airdask.store import DatabaseError, Store, check_db, init_db, reset_db


@click.group("db", cls=Group)
def db_group() -> None:
    """Create, reset and check the metadata database."""


def _url(store: Store) -> str:
    return store.engine.url.render_as_string(hide_password=True)


@db_group.command("init")
def db_init() -> None:
    """Create the schema and default_pool (idempotent)."""
    ctx = cli_context()
    store = ctx.store()
    try:
        created = init_db(store, default_pool_slots=ctx.config.core.default_pool_slots)
    except Exception as exc:
        raise CliError(f"cannot initialise {_url(store)}: {describe_error(exc)}") from None
    click.echo(f"{'initialised' if created else 'already initialised'}: {_url(store)}")


@db_group.command("reset")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def db_reset(yes: bool) -> None:
    """Drop every table and create them again (all history is lost)."""
    ctx = cli_context()
    store = ctx.store()
    url = _url(store)
    if not yes:
        click.confirm(f"Drop all airdask tables in {url}?", abort=True)
    try:
        reset_db(store, default_pool_slots=ctx.config.core.default_pool_slots)
    except Exception as exc:
        raise CliError(f"cannot reset {url}: {describe_error(exc)}") from None
    click.echo(f"reset: {url}")


@db_group.command("check")
def db_check() -> None:
    """Connect and verify the schema; exit 1 if anything is missing."""
    ctx = cli_context()
    store = ctx.store()
    try:
        status = check_db(store)
    except DatabaseError as exc:
        # check_db's message carries the driver's whole text (hints, a SQLAlchemy link):
        # one line names the server and the driver's reason.
        cause = exc.__cause__ or exc
        raise CliError(f"cannot connect to {_url(store)}: {describe_error(cause)}") from None
    if not status.ok:
        raise CliError(
            f"{status.url}: missing tables {', '.join(status.missing_tables)} "
            "(run `airdask db init`)"
        )
    click.echo(f"ok: {status.url} ({status.backend})")
