"""Building executors in tests (draining them, and task instances, come from
:mod:`airdask.testing`); the contract suite is parametrized over :data:`FACTORIES`, to which
each executor's own test module may add entries."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from airdask.config import Config
from airdask.executors import BaseExecutor, load_executor
from airdask.testing import drain as drain
from airdask.testing import make_ti as make_ti
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
