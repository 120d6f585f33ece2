"""Building executors from ``[core] executor``: the entries :mod:`.names` parses, each a
built-in name or a ``module.path.ClassName`` import path."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from inspect import signature
from typing import TYPE_CHECKING, Any

from airdask.executors.names import (
    BUILTIN_EXECUTORS,
    ExecutorName,
    ExecutorNameError,
    parse_executor_names,
)

if TYPE_CHECKING:
    from airdask.config import Config
    from airdask.executors.base import BaseExecutor

__all__ = [
    "BUILTIN_EXECUTORS",
    "ExecutorLoadError",
    "configured_names",
    "executor_class",
    "load_executor",
    "load_executors",
]


class ExecutorLoadError(ValueError):
    """The executor name is neither a built-in nor an importable BaseExecutor subclass."""


def executor_class(name: str) -> type[BaseExecutor]:
    from airdask.executors.base import BaseExecutor

    path = BUILTIN_EXECUTORS.get(name, name)
    module_name, _, class_name = path.rpartition(".")
    if not module_name:
        raise ExecutorLoadError(
            f"unknown executor {name!r}: use one of {', '.join(BUILTIN_EXECUTORS)} "
            "or a module.path.ClassName import path"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExecutorLoadError(f"cannot import executor module {module_name!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseExecutor)):
        raise ExecutorLoadError(f"{path!r} is not a BaseExecutor subclass")
    return cls


def configured_names(config: Config, value: str | None = None) -> list[ExecutorName]:
    """The entries of ``value`` (``--executor``), else of ``[core] executor``.

    :raises ExecutorLoadError: the value cannot be read (the message says why).
    """
    where = "--executor" if value else "[core] executor"
    text = value or config.core.executor
    try:
        return parse_executor_names(text, where=where)
    except ExecutorNameError as exc:
        raise ExecutorLoadError(str(exc)) from None


def _build(
    name: ExecutorName,
    config: Config,
    worker_resources: Mapping[str, float] | None,
    kwargs: dict[str, Any],
) -> BaseExecutor:
    cls = executor_class(name.module_path)
    if worker_resources is not None and "worker_resources" in signature(cls).parameters:
        kwargs = {**kwargs, "worker_resources": worker_resources}
    return cls(config=config, **kwargs)


def load_executors(
    value: str | Sequence[ExecutorName] | None = None,
    *,
    config: Config | None = None,
    worker_resources: Mapping[str, float] | None = None,
    kwargs_for: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[tuple[ExecutorName, BaseExecutor]]:
    """Every executor of ``value`` (entries, or their text; None: ``[core] executor``),
    built (not started), the default first.

    :param worker_resources: the pools table as resources, for executors whose constructor
        takes ``worker_resources`` (an embedded Dask cluster derives its workers from it).
    :param kwargs_for: extra constructor arguments by class name (``{"DaskExecutor":
        {"cluster_address": ...}}``).
    """
    if config is None:
        from airdask.config import load_config

        config = load_config()
    names = configured_names(config, value) if value is None or isinstance(value, str) else value
    built = []
    for name in names:
        extra = dict((kwargs_for or {}).get(name.class_name, {}))
        built.append((name, _build(name, config, worker_resources, extra)))
    return built


def load_executor(
    name_or_path: str | None = None,
    *,
    config: Config | None = None,
    worker_resources: Mapping[str, float] | None = None,
    **kwargs: Any,
) -> BaseExecutor:
    """The default executor (the first entry) of the argument, or of ``[core] executor``
    when it is None; the others of a list are not built.

    :param worker_resources: the pools table as resources (``{pool: slots}``), for an
        executor that starts workers of its own (an embedded Dask cluster); executors whose
        constructor takes no ``worker_resources`` are built without it.
    """
    if config is None:
        from airdask.config import load_config

        config = load_config()
    default = configured_names(config, name_or_path)[0]
    return _build(default, config, worker_resources, kwargs)
