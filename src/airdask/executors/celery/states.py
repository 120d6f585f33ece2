"""Reading the states of every attempt in flight in one round trip (Airflow's
BulkStateFetcher is the anchor): a Redis ``MGET`` of their result keys, or one SQL query
on the database backend's table. Forgetting acknowledged results rides along in the same
round trip (a pipelined ``DEL``, a ``DELETE`` in the same session).

Any other result backend is read one task at a time (logged once: it does not scale).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from celery import Celery
from celery.backends.redis import RedisBackend

log = logging.getLogger(__name__)

#: Ids per SQL ``IN (...)`` list (one query per chunk; in flight rarely reaches one).
SQL_CHUNK = 5000
PENDING = "PENDING"


class BulkStateFetcher:
    """``fetch(ids, forget)`` -> ``{id: (status, result)}``; a task the backend does not
    know (not started yet, or forgotten) is ``PENDING``.

    :param kind: ``redis``, ``database`` or ``other`` (see ``CeleryOptions.backend_kind``).
    """

    def __init__(self, app: Celery, kind: str) -> None:
        self.app = app
        self.kind = kind
        self.round_trips = 0  # for the benchmark: one per fetch on redis and database
        self._warned = False

    @property
    def backend(self) -> Any:
        return self.app.backend

    def fetch(self, ids: list[str], forget: Iterable[str] = ()) -> dict[str, tuple[str, Any]]:
        forget = list(forget)
        if not ids and not forget:
            return {}
        self.round_trips += 1
        if self.kind == "redis":
            return self._redis(ids, forget)
        if self.kind == "database":
            return self._database(ids, forget)
        return self._one_by_one(ids, forget)

    def _redis(self, ids: list[str], forget: list[str]) -> dict[str, tuple[str, Any]]:
        backend = self.backend
        pipe = backend.client.pipeline(transaction=False)
        if forget:
            pipe.delete(*[backend.get_key_for_task(i) for i in forget])
        if ids:
            pipe.mget([backend.get_key_for_task(i) for i in ids])
        replies = pipe.execute()
        if not ids:
            return {}
        out: dict[str, tuple[str, Any]] = {}
        for task_id, raw in zip(ids, replies[-1], strict=True):
            if raw is None:
                out[task_id] = (PENDING, None)
            else:
                meta = backend.decode_result(raw)
                out[task_id] = (str(meta["status"]), meta.get("result"))
        return out

    def _database(self, ids: list[str], forget: list[str]) -> dict[str, tuple[str, Any]]:
        backend = self.backend
        model = backend.task_cls
        out: dict[str, tuple[str, Any]] = dict.fromkeys(ids, (PENDING, None))
        session = backend.ResultSession()
        try:
            for start in range(0, len(forget), SQL_CHUNK):
                chunk = forget[start : start + SQL_CHUNK]
                session.query(model).filter(model.task_id.in_(chunk)).delete(
                    synchronize_session=False
                )
            if forget:
                session.commit()
            for start in range(0, len(ids), SQL_CHUNK):
                chunk = ids[start : start + SQL_CHUNK]
                for row in session.query(model).filter(model.task_id.in_(chunk)):
                    data = row.to_dict()
                    decode = getattr(backend, "_decode_stored_result", backend.decode)
                    data["result"] = decode(data["result"])
                    meta = backend.meta_from_decoded(data)
                    out[row.task_id] = (str(meta["status"]), meta.get("result"))
        finally:
            session.close()
        return out

    def _one_by_one(self, ids: list[str], forget: list[str]) -> dict[str, tuple[str, Any]]:
        if not self._warned:
            self._warned = True
            log.warning(
                "result backend %s has no bulk read: states are read one task at a time",
                type(self.backend).__name__,
            )
        for task_id in forget:
            self.backend.forget(task_id)
        out = {}
        for task_id in ids:
            meta = self.backend.get_task_meta(task_id)
            out[task_id] = (str(meta["status"]), meta.get("result"))
        return out


def quiet_redis_backends(app: Celery) -> None:
    """Make the executor's app use :class:`QuietRedisBackend` for ``redis://`` backends."""
    path = f"{__name__}:QuietRedisBackend"
    app.loader.override_backends = {"redis": path, "rediss": path}


class QuietRedisBackend(RedisBackend):  # type: ignore[misc]
    """The Redis backend without its per-task pub/sub subscription: sending a task
    subscribes to its result channel, for ``AsyncResult.get()``, which CeleryExecutor never
    calls (it reads states in bulk); the subscriptions would only pile up."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        pass
