"""Shared CLI plumbing: one-line errors, the resolved config, the store, rich output, and
the click classes every airdask command uses."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import click
from rich.console import Console

from airdask.config import Config, ConfigError, load_config
from airdask.masking import redact, register_config
from airdask.store import Store


class CliError(Exception):
    """A user error shown as one line (``error: …``) with exit status 1."""


@dataclass
class CliContext:
    config: Config
    console: Console

    def store(self) -> Store:
        """The store of ``[database] sql_alchemy_conn``; a URL SQLAlchemy cannot use (bad
        syntax, unknown dialect or driver) is a one-line error, its password masked."""
        try:
            store = Store.from_config(self.config)
        except Exception as exc:
            url = redact(self.config.database.sql_alchemy_conn)
            raise CliError(f"[database] sql_alchemy_conn {url}: {describe_error(exc)}") from None
        # Closed with the command, so that a command run in-process (CliRunner, a notebook)
        # leaves no pooled connection behind.
        command = click.get_current_context(silent=True)
        if command is not None:
            command.call_on_close(store.dispose)
        return store


def cli_context() -> CliContext:
    try:
        config = load_config()
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    register_config(config)
    return CliContext(config=config, console=Console())


def describe_error(exc: BaseException) -> str:
    """``Type: first line`` of an exception, masked: the rest of a driver's message (hints,
    SQLAlchemy's "Background on this error" link) is detail a one-line error leaves out. A
    SQLAlchemy ``DBAPIError`` is described by the driver's error it wraps."""
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        exc = orig
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    name = type(exc).__name__
    return redact(f"{name}: {lines[0]}" if lines else name)


# A negative number as a command line token: "-1", "-2.5", "-.5", "-1e3".
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def negative_numbers_as_arguments(command: click.Command, args: Sequence[str]) -> list[str]:
    """``args`` rearranged so that click reads a negative number as an argument, not as an
    unknown option (click has no such rule: ``pools set NAME -1`` was "No such option").

    When a token is a negative number that is neither an option's value nor the name of one
    of the command's options, the options (with their values) are moved first and every
    argument after a ``--``, in their order. Anything else is left untouched.
    """
    takes: dict[str, int] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            count = 0 if param.is_flag or param.count else max(param.nargs, 1)
            for name in (*param.opts, *param.secondary_opts):
                takes[name] = count
    options: list[str] = []
    arguments: list[str] = []
    moved = False
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            arguments += args[i + 1 :]
            break
        if _NEGATIVE_NUMBER.match(token) and token not in takes:
            arguments.append(token)
            moved = True
        elif token.startswith("-") and len(token) > 1:
            name, eq, _value = token.partition("=")
            n = 0 if eq else takes.get(name, 0)
            options += args[i : i + 1 + n]
            i += n
        else:
            arguments.append(token)
        i += 1
    return [*options, "--", *arguments] if moved else list(args)


class Command(click.Command):
    """A click command that takes negative numbers as arguments (``pools set P -1`` reaches
    the check that names the problem)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not (self.ignore_unknown_options or self.allow_extra_args):
            args = negative_numbers_as_arguments(self, args)
        return super().parse_args(ctx, args)


class Group(click.Group):
    """A click group whose commands and subgroups are :class:`Command`/:class:`Group`."""

    command_class = Command
    group_class = type  # subgroups of a Group are Groups
