"""Command groups from the layers above the store: executors' own CLI commands and, when
present, the scheduler/DAG commands. Collected at start-up of the ``airdask`` command."""

from __future__ import annotations

import importlib

import click

from airdask.executors.loader import BUILTIN_EXECUTORS, executor_class

#: Modules that define a ``commands() -> list[click.Command]`` function.
COMMAND_MODULES: tuple[str, ...] = (
    "airdask.cli.run_cmd",
    "airdask.cli.scheduler_cmd",
    "airdask.cli.dags_cmd",
    "airdask.cli.tasks_cmd",
    "airdask.cli.pools_cmd",
)


def commands() -> list[click.Command]:
    found: dict[str, click.Command] = {}
    for name in BUILTIN_EXECUTORS:
        try:
            cls = executor_class(name)
        except Exception:  # an executor whose module is absent offers no commands
            continue
        for command in cls.get_cli_commands():
            found.setdefault(command.name or "", command)
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        for command in module.commands():
            found.setdefault(command.name or "", command)
    return list(found.values())
