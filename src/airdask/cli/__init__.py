"""The ``airdask`` command. Subcommand groups live in sibling modules and are added here."""

from __future__ import annotations

import logging
import sys

import click

from airdask.cli.common import CliError, cli_context
from airdask.cli.config_cmd import config_group
from airdask.cli.db_cmd import db_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="airdask")
def cli(verbose: int) -> None:
    """airdask: Airflow's executor model, with Dask as the cluster engine."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s"
    )


cli.add_command(config_group)
cli.add_command(db_group)


def _add_optional_groups() -> None:
    """Groups from later layers (scheduler, DAGs, executors' own CLI commands)."""
    from airdask.cli import extra

    for command in extra.commands():
        cli.add_command(command)


def main() -> None:
    try:
        _add_optional_groups()
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CliError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


__all__ = ["CliError", "cli", "cli_context", "main"]
