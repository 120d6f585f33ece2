"""Building and draining executors in tests; the contract suite is parametrized over
:data:`FACTORIES`, to which each executor's own test module may add entries."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from airdask.config import Config
from airdask.executors import BaseExecutor, load_executor
from airdask.state import TaskInstanceKey, TaskInstanceState
from airdask.store import TaskInstance
from celery_support import celery_factory
from dask_support import dask_factory, local_dask_factory

Factory = Callable[[pytest.FixtureRequest, Config, "int | None"], BaseExecutor]


def _by_name(name: str) -> Factory:
    def build(
        request: pytest.FixtureRequest, config: Config, parallelism: int | None
    ) -> BaseExecutor:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return load_executor(name, config=config, parallelism=parallelism)

    return build


FACTORIES: dict[str, Factory] = {
    "SequentialExecutor": _by_name("SequentialExecutor"),
    "LocalExecutor": _by_name("LocalExecutor"),
    "DebugExecutor": _by_name("DebugExecutor"),
    "DaskExecutor": dask_factory,
    "LocalDaskExecutor": local_dask_factory,
    "CeleryExecutor-redis": celery_factory("redis"),
    "CeleryExecutor-rabbitmq": celery_factory("rabbitmq"),
}

TERMINAL = {TaskInstanceState.SUCCESS, TaskInstanceState.FAILED}


def make_ti(
    task_id: str,
    *,
    dag_id: str = "contract",
    run_id: str = "run1",
    try_number: int = 1,
    executor_config: dict[str, Any] | None = None,
    **kwargs: Any,
) -> TaskInstance:
    return TaskInstance(
        dag_id=dag_id,
        task_id=task_id,
        run_id=run_id,
        try_number=try_number,
        executor_config=executor_config,
        **kwargs,
    )


def drain(
    executor: BaseExecutor,
    keys: Iterable[TaskInstanceKey],
    *,
    timeout: float = 60,
    dag_ids: list[str] | None = None,
) -> dict[TaskInstanceKey, tuple[TaskInstanceState, Any]]:
    """Heartbeat until every key has a terminal event; return those events."""
    wanted = set(keys)
    done: dict[TaskInstanceKey, tuple[TaskInstanceState, Any]] = {}
    deadline = time.monotonic() + timeout
    while not wanted <= set(done):
        executor.heartbeat()
        for key, (state, info) in executor.get_event_buffer(dag_ids).items():
            if state in TERMINAL:
                done[key] = (state, info)
        if wanted <= set(done):
            break
        if time.monotonic() > deadline:
            missing = sorted(map(str, wanted - set(done)))
            raise AssertionError(f"no terminal event within {timeout}s for {missing}")
        time.sleep(0.02)
    return done
