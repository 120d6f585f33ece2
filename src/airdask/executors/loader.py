"""``[core] executor``: a built-in name or a ``module.path.ClassName`` import path."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from inspect import signature
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airdask.config import Config
    from airdask.executors.base import BaseExecutor

BUILTIN_EXECUTORS: dict[str, str] = {
    "SequentialExecutor": "airdask.executors.sequential.SequentialExecutor",
    "LocalExecutor": "airdask.executors.local.LocalExecutor",
    "DebugExecutor": "airdask.executors.debug.DebugExecutor",
    "DaskExecutor": "airdask.executors.dask.DaskExecutor",
    "LocalDaskExecutor": "airdask.executors.local_dask.LocalDaskExecutor",
    # Needs the airdask[celery] extra; imported only when used.
    "CeleryExecutor": "airdask.executors.celery.executor.CeleryExecutor",
}


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


def load_executor(
    name_or_path: str | None = None,
    *,
    config: Config | None = None,
    worker_resources: Mapping[str, float] | None = None,
    **kwargs: Any,
) -> BaseExecutor:
    """An executor built from the argument, or from ``[core] executor`` when it is None.

    :param worker_resources: the pools table as resources (``{pool: slots}``), for an
        executor that starts workers of its own (an embedded Dask cluster); executors whose
        constructor takes no ``worker_resources`` are built without it.
    """
    if config is None:
        from airdask.config import load_config

        config = load_config()
    name = name_or_path or str(config.get("core", "executor"))
    cls = executor_class(name)
    if worker_resources is not None and "worker_resources" in signature(cls).parameters:
        kwargs["worker_resources"] = worker_resources
    return cls(config=config, **kwargs)
