"""Shared CLI plumbing: one-line errors, the resolved config, the store, rich output."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console

from airdask.config import Config, ConfigError, load_config
from airdask.store import Store


class CliError(Exception):
    """A user error shown as one line (``error: …``) with exit status 1."""


@dataclass
class CliContext:
    config: Config
    console: Console

    def store(self) -> Store:
        return Store.from_config(self.config)


def cli_context() -> CliContext:
    try:
        config = load_config()
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    return CliContext(config=config, console=Console())
