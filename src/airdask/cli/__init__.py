"""The ``airdask`` command. Subcommand groups live in sibling modules and are added here.

Every error reaches the user as one line on stderr, ``error: …``, with its secrets masked:
a :class:`CliError`, a click usage error (bad option, missing or ill-typed argument) and an
unexpected exception alike (``-vv`` shows the traceback of the latter).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import click

from airdask.cli.common import CliError, Group, cli_context, describe_error
from airdask.cli.config_cmd import config_group
from airdask.cli.db_cmd import db_group
from airdask.cli.log_setup import setup_logging
from airdask.masking import redact


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v INFO, -vv DEBUG).")
@click.option("-q", "--quiet", count=True, help="Less log output (-q errors only).")
@click.version_option(package_name="airdask")
def cli(verbose: int, quiet: int) -> None:
    """airdask: Airflow's executor model, with Dask as the cluster engine.

    The log level is [logging] logging_level unless -v or -q is given.
    """
    setup_logging(verbose=verbose, quiet=quiet)


cli.add_command(config_group)
cli.add_command(db_group)


def _add_optional_groups(argv: Sequence[str] | None = None) -> None:
    """Groups from later layers (scheduler, DAGs, executors' own CLI commands); with
    ``argv``, only what it needs when that is one of airdask's own commands (see
    :func:`airdask.cli.extra.commands`)."""
    from airdask.cli import extra

    for command in extra.commands(argv):
        cli.add_command(command)


def _fail(message: str, code: int) -> None:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    click.echo(f"error: {redact(lines[0] if lines else 'unknown error')}", err=True)
    sys.exit(code)


def main(args: Sequence[str] | None = None) -> None:
    """The ``airdask`` entry point; ``args`` default to ``sys.argv[1:]``."""
    setup_logging()  # before the optional groups: their import problems are logged
    try:
        argv = list(args) if args is not None else sys.argv[1:]
        _add_optional_groups(argv)
        cli.main(args=argv, prog_name="airdask", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # click >= 8.2: `airdask` alone
            exc.show()  # the help text, as click prints it
            sys.exit(exc.exit_code)
        where = exc.ctx.command_path if exc.ctx is not None else "airdask"
        _fail(f"{exc.format_message()} (see '{where} --help')", exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except CliError as exc:
        _fail(str(exc), 1)
    except Exception as exc:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        _fail(f"{describe_error(exc)} (unexpected; `airdask -vv ...` shows the traceback)", 1)


__all__ = ["CliError", "cli", "cli_context", "main"]
