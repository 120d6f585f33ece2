"""Command groups from the layers above the store: executors' own CLI commands and, when
present, the scheduler/DAG commands. Collected at start-up of the ``airdask`` command."""

from __future__ import annotations

import importlib
import logging

import click

from airdask.executors.loader import BUILTIN_EXECUTORS, executor_class

log = logging.getLogger(__name__)

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
        try:
            executor_commands = cls.get_cli_commands()
        except Exception as exc:  # one executor's broken CLI must not take `airdask` down
            log.warning("%s offers no CLI commands: %s", name, exc)
            continue
        for command in executor_commands:
            found.setdefault(command.name or "", command)
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        for command in module.commands():
            found.setdefault(command.name or "", command)
    return list(found.values())
