"""CeleryExecutor: the BaseExecutor contract on Celery 5 workers (Redis or RabbitMQ broker).

Needs the ``airdask[celery]`` extra. Nothing here imports Celery at import time but
``executor``, ``app``, ``states`` and ``cli``, which the loader imports only when the
executor is used (``[core] executor = CeleryExecutor``).

``settings`` (the ``[celery]`` options, the one place they are read), ``messages`` (attempts
as JSON), ``app`` (the Celery app, built when the executor starts or a worker boots, and
the task that runs on workers), ``states`` (reading every attempt's state in one round trip),
``executor`` (the class), ``cli`` (``airdask celery worker|inspect``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["CeleryExecutor"]


def __getattr__(name: str) -> Any:
    if name == "CeleryExecutor":
        from airdask.executors.celery.executor import CeleryExecutor

        return CeleryExecutor
    raise AttributeError(f"module 'airdask.executors.celery' has no attribute {name!r}")
