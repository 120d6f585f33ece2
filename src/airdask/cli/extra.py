"""Command groups from the layers above the store: executors' own CLI commands and, when
present, the scheduler/DAG commands. Collected at start-up of the ``airdask`` command."""

from __future__ import annotations

import importlib
import logging

import click

from airdask.executors.loader import BUILTIN_EXECUTORS, ExecutorLoadError, executor_class

log = logging.getLogger(__name__)

#: Modules that define a ``commands() -> list[click.Command]`` function.
COMMAND_MODULES: tuple[str, ...] = (
    "airdask.cli.run_cmd",
    "airdask.cli.scheduler_cmd",
    "airdask.cli.dags_cmd",
    "airdask.cli.tasks_cmd",
    "airdask.cli.pools_cmd",
)


def _report_missing(name: str, exc: Exception) -> None:
    """A warning naming the module and its error. Only an optional dependency that is not
    installed (a package outside airdask, e.g. an extra's) is logged at INFO, as Airflow does
    for providers whose extras are absent: that is a choice, not a fault."""
    module = BUILTIN_EXECUTORS[name].rpartition(".")[0]
    if isinstance(exc, ExecutorLoadError) and exc.__cause__ is None:
        log.warning("%s offers no `airdask` commands: %s", name, exc)  # not an executor class
        return
    # executor_class wraps an ImportError; anything else the module raised comes as it is.
    cause = exc.__cause__ or exc
    missing = getattr(cause, "name", None) if isinstance(cause, ModuleNotFoundError) else None
    optional = bool(missing) and str(missing).partition(".")[0] != "airdask"
    log.log(
        logging.INFO if optional else logging.WARNING,
        "%s offers no `airdask` commands: its module %s cannot be imported (%s: %s)",
        name,
        module,
        type(cause).__name__,
        cause,
    )


def commands() -> list[click.Command]:
    found: dict[str, click.Command] = {}
    for name in BUILTIN_EXECUTORS:
        try:
            cls = executor_class(name)
        except Exception as exc:  # one executor's broken module must not take `airdask` down
            _report_missing(name, exc)
            continue
        try:
            executor_commands = cls.get_cli_commands()
        except Exception as exc:  # one executor's broken CLI must not take `airdask` down
            log.warning(
                "%s offers no `airdask` commands: its get_cli_commands() raised %s: %s",
                name,
                type(exc).__name__,
                exc,
            )
            continue
        for command in executor_commands:
            found.setdefault(command.name or "", command)
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        for command in module.commands():
            found.setdefault(command.name or "", command)
    return list(found.values())
