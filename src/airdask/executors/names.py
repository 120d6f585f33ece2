"""Executor names: ``[core] executor`` as a list of executors, Airflow 2.10's grammar.

``[core] executor`` is a comma-separated list; each entry is ``[alias:]name_or_path``,
where ``name_or_path`` is a built-in class name (``DaskExecutor``) or a
``module.path.ClassName`` import path::

    [core]
    executor = DaskExecutor,LocalExecutor,celery:CeleryExecutor

The first entry is the default executor: a task that names none runs there. A task picks
another with ``executor="..."`` (per task or through ``default_args``), spelled as the
entry's alias, its class name or its import path.

Parsing is pure: nothing is imported, so a DAG can be checked against the names without
building (or even being able to import) the executors, as Airflow's DAG processor does.

Each entry has one :attr:`ExecutorName.id`, its alias when it has one and its class name
otherwise; that is what a task instance records in its ``executor`` column and what the
tables show. Two entries that would answer to the same spelling (the same import path, the
same alias, a class name shared by two entries) are refused: a task's choice must name one
executor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Built-in executors by class name (the import path each name stands for).
BUILTIN_EXECUTORS: dict[str, str] = {
    "SequentialExecutor": "airdask.executors.sequential.SequentialExecutor",
    "LocalExecutor": "airdask.executors.local.LocalExecutor",
    "DebugExecutor": "airdask.executors.debug.DebugExecutor",
    "DaskExecutor": "airdask.executors.dask.DaskExecutor",
    "LocalDaskExecutor": "airdask.executors.local_dask.LocalDaskExecutor",
    # Needs the airdask[celery] extra; imported only when used.
    "CeleryExecutor": "airdask.executors.celery.executor.CeleryExecutor",
}


class ExecutorNameError(ValueError):
    """``[core] executor`` (or ``--executor``) cannot be read; the message says why."""


class UnknownExecutorError(LookupError):
    """A task names an executor that is not configured; the message names the configured
    ones."""


@dataclass(frozen=True)
class ExecutorName:
    """One entry of ``[core] executor``.

    :param module_path: ``module.path.ClassName`` (a built-in name is expanded to its path).
    :param alias: the entry's ``alias:`` prefix, if any.
    """

    module_path: str
    alias: str | None = None

    @property
    def class_name(self) -> str:
        return self.module_path.rpartition(".")[2]

    @property
    def id(self) -> str:
        """What task instances record and tables show: the alias, else the class name."""
        return self.alias or self.class_name

    @property
    def spellings(self) -> tuple[str, ...]:
        """Every way a task may name this executor: alias, class name, import path."""
        names = [self.alias] if self.alias else []
        return (*names, self.class_name, self.module_path)

    def __str__(self) -> str:
        return f"{self.alias}:{self.class_name}" if self.alias else self.class_name


def _entry(text: str, where: str) -> ExecutorName:
    alias, sep, name = text.rpartition(":")
    alias, name = alias.strip(), name.strip()
    if sep and not alias:
        raise ExecutorNameError(f"{where}: {text!r} has an empty alias before ':'")
    if alias and not alias.replace("_", "").replace("-", "").isalnum():
        raise ExecutorNameError(
            f"{where}: alias {alias!r} must be letters, digits, '_' and '-' (no '.' or ':')"
        )
    if alias in BUILTIN_EXECUTORS:
        raise ExecutorNameError(f"{where}: alias {alias!r} is a built-in executor's name")
    if name in BUILTIN_EXECUTORS:
        return ExecutorName(BUILTIN_EXECUTORS[name], alias or None)
    module, _, class_name = name.rpartition(".")
    if not module or not class_name:
        raise ExecutorNameError(
            f"{where}: unknown executor {name!r}: use one of {', '.join(BUILTIN_EXECUTORS)} "
            "or a module.path.ClassName import path"
        )
    return ExecutorName(name, alias or None)


def parse_executor_names(value: str, *, where: str = "[core] executor") -> list[ExecutorName]:
    """The entries of ``value`` in order (the first is the default).

    :raises ExecutorNameError: an empty list or entry, a bad alias, an unknown bare name, or
        two entries answering to the same spelling.
    """
    entries = [part.strip() for part in value.split(",")]
    if not any(entries):
        raise ExecutorNameError(f"{where} is empty: name at least one executor")
    if not all(entries):
        raise ExecutorNameError(f"{where}: {value!r} has an empty entry")
    names = [_entry(entry, where) for entry in entries]
    seen: dict[str, ExecutorName] = {}
    for name in names:
        for spelling in dict.fromkeys(name.spellings):
            other = seen.setdefault(spelling, name)
            if other is not name:
                hint = "" if name.module_path == other.module_path else "; give one an alias"
                raise ExecutorNameError(
                    f"{where}: {other} and {name} both answer to {spelling!r}: each executor "
                    f"may be configured once and named unambiguously{hint}"
                )
    return names


def resolve(requested: str | None, names: Sequence[ExecutorName]) -> ExecutorName:
    """The configured entry a task's ``executor=`` names (None: the default, the first).

    :raises UnknownExecutorError: naming the configured executors.
    """
    if requested is None:
        return names[0]
    for name in names:
        if requested in name.spellings:
            return name
    raise UnknownExecutorError(
        f"executor {requested!r} is not configured (configured in [core] executor: "
        f"{describe(names)})"
    )


def describe(names: Iterable[ExecutorName]) -> str:
    """``DaskExecutor (default), LocalExecutor, celery:CeleryExecutor``."""
    parts = [str(name) for name in names]
    if parts:
        parts[0] += " (default)"
    return ", ".join(parts)
