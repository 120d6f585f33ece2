"""Executors: the BaseExecutor contract and the built-in implementations.

Executor classes are imported lazily so that ``import airdask.executors`` stays cheap and
does not pull in ``distributed`` for the local executors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airdask.executors.base import BaseExecutor, NotSupportedError
from airdask.executors.events import EventInfo
from airdask.executors.loader import (
    BUILTIN_EXECUTORS,
    ExecutorLoadError,
    executor_class,
    load_executor,
)

if TYPE_CHECKING:  # what __getattr__ returns, for type checkers
    from airdask.executors.dask import DaskExecutor as DaskExecutor
    from airdask.executors.debug import DebugExecutor as DebugExecutor
    from airdask.executors.local import LocalExecutor as LocalExecutor
    from airdask.executors.local_dask import LocalDaskExecutor as LocalDaskExecutor
    from airdask.executors.sequential import SequentialExecutor as SequentialExecutor

__all__ = [
    "BUILTIN_EXECUTORS",
    "BaseExecutor",
    "CeleryExecutor",
    "DaskExecutor",
    "DebugExecutor",
    "EventInfo",
    "ExecutorLoadError",
    "LocalDaskExecutor",
    "LocalExecutor",
    "NotSupportedError",
    "SequentialExecutor",
    "executor_class",
    "load_executor",
]


def __getattr__(name: str) -> Any:
    if name in BUILTIN_EXECUTORS:
        return executor_class(name)
    raise AttributeError(f"module 'airdask.executors' has no attribute {name!r}")
