"""``airdask config list`` and ``airdask config get SECTION KEY``."""

from __future__ import annotations

import click
from rich.table import Table

from airdask.cli.common import CliError, cli_context
from airdask.config import OPTIONS, ConfigError


@click.group("config")
def config_group() -> None:
    """Show the resolved configuration."""


@config_group.command("list")
@click.option("--defaults", is_flag=True, help="Also show each option's default and help.")
def config_list(defaults: bool) -> None:
    """Every option with its value and where the value came from."""
    ctx = cli_context()
    table = Table(title=f"airdask configuration ({ctx.config.path})")
    for column in ("section", "key", "value", "source"):
        table.add_column(column)
    if defaults:
        table.add_column("default")
        table.add_column("help")
    for section, key, value in ctx.config.items():
        row = [section, key, value.raw, value.source]
        if defaults:
            option = OPTIONS[section][key]
            row += [option.default, option.help]
        table.add_row(*row)
    ctx.console.print(table)


@config_group.command("get")
@click.argument("section")
@click.argument("key")
def config_get(section: str, key: str) -> None:
    """Print one value."""
    ctx = cli_context()
    try:
        value = ctx.config.get(section, key)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    click.echo(value)
