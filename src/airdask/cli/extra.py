"""Command groups from the layers above the store: executors' own CLI commands and, when
present, the scheduler/DAG commands. Collected at start-up of the ``airdask`` command."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence

import click

from airdask.executors.loader import BUILTIN_EXECUTORS, ExecutorLoadError, executor_class

log = logging.getLogger(__name__)

#: Modules that define a ``commands() -> list[click.Command]`` function, by the name of the
#: command they define. These names are airdask's own: an executor's command of the same
#: name is left out.
COMMAND_MODULES: dict[str, str] = {
    "run": "airdask.cli.run_cmd",
    "scheduler": "airdask.cli.scheduler_cmd",
    "dags": "airdask.cli.dags_cmd",
    "tasks": "airdask.cli.tasks_cmd",
    "pools": "airdask.cli.pools_cmd",
}


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


def command_name(argv: Sequence[str]) -> str | None:
    """The command ``airdask ARGV`` runs: its first argument that is not an option (the
    ``airdask`` group's options take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def commands(argv: Sequence[str] | None = None) -> list[click.Command]:
    """Every command, or with ``argv`` (the ``airdask`` command's arguments) the one it runs
    when that is one of :data:`COMMAND_MODULES`: ``airdask tasks states`` then imports
    neither the Dask nor the Celery executor (measured: 0.5 s of the command's 1.3 s)."""
    name = command_name(argv) if argv is not None else None
    if name in COMMAND_MODULES:
        return list(importlib.import_module(COMMAND_MODULES[name]).commands())
    found: dict[str, click.Command] = {}
    for module_name in COMMAND_MODULES.values():
        module = importlib.import_module(module_name)
        for command in module.commands():
            found.setdefault(command.name or "", command)
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
    return list(found.values())
