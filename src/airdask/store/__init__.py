"""The metadata store: models, sessions and schema management."""

from airdask.store.db import DEFAULT_POOL, DatabaseError, check_db, init_db, require_db, reset_db
from airdask.store.models import Base, DagModel, DagRun, Job, Log, Pool, TaskInstance, utcnow
from airdask.store.session import Store, make_engine

__all__ = [
    "DEFAULT_POOL",
    "Base",
    "DagModel",
    "DagRun",
    "DatabaseError",
    "Job",
    "Log",
    "Pool",
    "Store",
    "TaskInstance",
    "check_db",
    "init_db",
    "make_engine",
    "require_db",
    "reset_db",
    "utcnow",
]
