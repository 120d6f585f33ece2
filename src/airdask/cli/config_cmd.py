"""``airdask config list`` and ``airdask config get SECTION KEY``.

Sensitive values are masked unless ``--show-secrets`` is given: a URL keeps everything but
its password, any other sensitive option shows as the mask (see :mod:`airdask.masking`).
"""

from __future__ import annotations

import click
from rich.table import Table

from airdask.cli.common import CliError, Group, cli_context
from airdask.config import OPTIONS, ConfigError
from airdask.masking import display_value

SHOW_SECRETS_HELP = "Show passwords and other sensitive values in clear."


def _shown(section: str, key: str, raw: str, show_secrets: bool) -> str:
    if show_secrets:
        return raw
    return display_value(raw, sensitive=OPTIONS[section][key].sensitive)


@click.group("config", cls=Group)
def config_group() -> None:
    """Show the resolved configuration."""


@config_group.command("list")
@click.option("--defaults", is_flag=True, help="Also show each option's default and help.")
@click.option("--show-secrets", is_flag=True, help=SHOW_SECRETS_HELP)
def config_list(defaults: bool, show_secrets: bool) -> None:
    """Every option with its value and where the value came from."""
    ctx = cli_context()
    table = Table(title=f"airdask configuration ({ctx.config.path})")
    for column in ("section", "key", "value", "source"):
        table.add_column(column)
    if defaults:
        table.add_column("default")
        table.add_column("help")
    for section, key, value in ctx.config.items():
        row = [section, key, _shown(section, key, value.raw, show_secrets), value.source]
        if defaults:
            option = OPTIONS[section][key]
            row += [option.default, option.help]
        table.add_row(*row)
    ctx.console.print(table)


@config_group.command("get")
@click.argument("section")
@click.argument("key")
@click.option("--show-secrets", is_flag=True, help=SHOW_SECRETS_HELP)
def config_get(section: str, key: str, show_secrets: bool) -> None:
    """Print one value."""
    ctx = cli_context()
    try:
        value = ctx.config.get(section, key)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    click.echo(_shown(section, key, str(value), show_secrets))
