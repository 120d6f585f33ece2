"""The ``[celery]`` settings, read in one place (:func:`celery_settings`).

Plain data: no Celery import, so the scheduler and ``airdask config`` never need the extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airdask.config import CelerySettings, Config

#: The queue name the scheduler gives a task whose queue is not set.
AIRDASK_DEFAULT_QUEUE = "default"


@dataclass(frozen=True)
class CeleryOptions:
    """What CeleryExecutor and ``airdask celery worker`` need: the ``[celery]`` section as
    configured, and the two values derived from the rest of the configuration."""

    #: ``[celery]`` as configured (see :data:`airdask.config.OPTIONS` for each field). Its
    #: ``result_backend`` may be empty: use :attr:`result_backend`, which is resolved.
    celery: CelerySettings
    #: The backend workers store outcomes in (:func:`resolve_result_backend`).
    result_backend: str
    #: ``[logging] base_log_folder``: where the executor writes the task logs it harvests.
    base_log_folder: str

    def queue_for(self, queue: str | None) -> str:
        """The Celery queue of a task whose airdask queue is ``queue``."""
        if not queue or queue == AIRDASK_DEFAULT_QUEUE:
            return self.celery.default_queue
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
        celery=celery,
        result_backend=resolve_result_backend(
            celery.result_backend, celery.broker_url, config.database.sql_alchemy_conn
        ),
        base_log_folder=config.logging.base_log_folder,
    )
