"""The ``[celery]`` settings, read in one place (:func:`celery_settings`).

Plain data: no Celery import, so the scheduler and ``airdask config`` never need the extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airdask.config import Config

#: The queue name the scheduler gives a task whose queue is not set.
AIRDASK_DEFAULT_QUEUE = "default"


@dataclass(frozen=True)
class CeleryOptions:
    """What CeleryExecutor and ``airdask celery worker`` need; see ``[celery]`` in
    :data:`airdask.config.OPTIONS` for each field's meaning."""

    broker_url: str
    result_backend: str
    default_queue: str
    worker_concurrency: int
    allow_pickle: bool
    operation_timeout: float
    visibility_timeout: float
    lost_after: float
    log_max_bytes: int
    base_log_folder: str

    def queue_for(self, queue: str | None) -> str:
        """The Celery queue of a task whose airdask queue is ``queue``."""
        if not queue or queue == AIRDASK_DEFAULT_QUEUE:
            return self.default_queue
        return queue

    @property
    def backend_kind(self) -> str:
        """``redis``, ``database`` or ``other`` (states then read one by one)."""
        if self.result_backend.startswith(("redis://", "rediss://", "redis+socket://")):
            return "redis"
        if self.result_backend.startswith("db+"):
            return "database"
        return "other"


def resolve_result_backend(result_backend: str, broker_url: str, database_url: str) -> str:
    """The configured backend, else the broker when it is Redis (workers then need no
    database credentials), else the metadata database through SQLAlchemy (as Airflow)."""
    if result_backend:
        return result_backend
    if broker_url.startswith(("redis://", "rediss://", "redis+socket://")):
        return broker_url
    return "db+" + database_url


def celery_settings(config: Config) -> CeleryOptions:
    """Every ``[celery]`` option (and the two others CeleryExecutor uses) from ``config``."""
    celery = config.celery
    return CeleryOptions(
        broker_url=celery.broker_url,
        result_backend=resolve_result_backend(
            celery.result_backend, celery.broker_url, config.database.sql_alchemy_conn
        ),
        default_queue=celery.default_queue,
        worker_concurrency=celery.worker_concurrency,
        allow_pickle=celery.allow_pickle,
        operation_timeout=celery.operation_timeout,
        visibility_timeout=celery.visibility_timeout,
        lost_after=celery.lost_after,
        log_max_bytes=celery.log_max_bytes,
        base_log_folder=config.logging.base_log_folder,
    )
