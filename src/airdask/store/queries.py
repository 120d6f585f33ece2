"""Read-only queries several layers share (so each is written once)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from airdask.state import LIVE_VALUES, TaskInstanceState
from airdask.store.db import DEFAULT_POOL
from airdask.store.models import Pool, TaskInstance

if TYPE_CHECKING:
    from airdask.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolUsage:
    """One pool's slots and what holds them: the ``pool_slots`` of its running and of its
    queued task instances (Airflow's rule)."""

    name: str
    slots: int
    running: int = 0
    queued: int = 0
    description: str = ""

    @property
    def open(self) -> int:
        """Slots still free; negative when slots were lowered below what is in use."""
        return self.slots - self.running - self.queued


def pool_usage(session: Session, *, slots: Mapping[str, int] | None = None) -> dict[str, PoolUsage]:
    """Every pool's usage, by pool name in order: the one query behind the scheduler's open
    slots, ``airdask pools list`` and the dashboard summary.

    One ``GROUP BY (pool, state)`` over the live (queued, running) task instances, answered
    from the state index. ``slots`` are the pools' slots when the caller has read them
    already (the scheduler, which locks the pool rows: :func:`airdask.scheduler.claims.
    lock_pools`); otherwise they are read here, with the descriptions. Task instances of a
    pool that does not exist are not counted.
    """
    if slots is None:
        rows = session.execute(select(Pool.name, Pool.slots, Pool.description))
        pools = {name: (int(n), description or "") for name, n, description in rows}
    else:
        pools = {name: (int(n), "") for name, n in slots.items()}
    used: dict[tuple[str, str], int] = {}
    for pool, state, n in session.execute(
        select(TaskInstance.pool, TaskInstance.state, func.sum(TaskInstance.pool_slots))
        .where(TaskInstance.state.in_(LIVE_VALUES))
        .group_by(TaskInstance.pool, TaskInstance.state)
    ):
        used[(str(pool), str(state))] = int(n or 0)
    running, queued = TaskInstanceState.RUNNING.value, TaskInstanceState.QUEUED.value
    return {
        name: PoolUsage(
            name,
            total,
            used.get((name, running), 0),
            used.get((name, queued), 0),
            description,
        )
        for name, (total, description) in sorted(pools.items())
    }


def select_instances(
    dag_id: str, run_id: str, wanted: Iterable[tuple[str, int]], *, chunk: int = 400
) -> Iterator[Select[TaskInstance]]:
    """SELECTs of the run's task instances ``wanted`` (``(task_id, map_index)`` pairs),
    exactly those, in the order of the key: at most ``chunk`` per statement.

    Each statement is ``task_id IN (...)`` with ``map_index = -1`` (unmapped tasks, however
    many), or one task with ``map_index IN (...)``: both are ranges of the primary key
    ``(dag_id, task_id, run_id, map_index)``. A row-value ``(task_id, map_index) IN
    (...)`` is not: SQLite then reads every task instance of the DAG (measured: 30 ms per
    statement in a 100,000-task run), and PostgreSQL spends 70 ms planning the 400-way OR
    it becomes."""
    by_task: dict[str, list[int]] = {}
    for task_id, map_index in sorted(set(wanted)):
        by_task.setdefault(task_id, []).append(map_index)
    in_run = (TaskInstance.dag_id == dag_id) & (TaskInstance.run_id == run_id)

    def of_tasks(task_ids: list[str]) -> Select[TaskInstance]:
        return select(TaskInstance).where(
            in_run, TaskInstance.task_id.in_(task_ids), TaskInstance.map_index == -1
        )

    unmapped: list[str] = []
    for task_id, indexes in by_task.items():  # in task order: the order of the key
        if indexes == [-1]:
            unmapped.append(task_id)
            if len(unmapped) == chunk:
                yield of_tasks(unmapped)
                unmapped = []
            continue
        if unmapped:
            yield of_tasks(unmapped)
            unmapped = []
        for i in range(0, len(indexes), chunk):
            yield select(TaskInstance).where(
                in_run,
                TaskInstance.task_id == task_id,
                TaskInstance.map_index.in_(indexes[i : i + chunk]),
            )
    if unmapped:
        yield of_tasks(unmapped)


def pool_resources(session: Session) -> dict[str, float]:
    """``{pool: slots}`` of every non-default pool with slots: what Dask workers offer as
    resources so that a task in pool P with ``pool_slots=k`` runs only where ``P: k`` is
    free (``airdask dask worker``, and the embedded cluster)."""
    rows = session.execute(select(Pool.name, Pool.slots)).all()
    return {name: float(slots) for name, slots in rows if name != DEFAULT_POOL and slots > 0}


def pool_resources_of(config: Config) -> dict[str, float]:
    """:func:`pool_resources` from the metadata database of ``config``, or ``{}`` when it
    is absent or not initialised (workers then offer no pool resources; the routing
    policy ``[dask] pool_resources`` says what happens to pool tasks)."""
    from sqlalchemy import inspect

    from airdask.store.session import Store

    try:
        store = Store.from_config(config)
    except Exception as exc:
        log.info("no metadata database for pool resources: %s", exc)
        return {}
    try:
        if "slot_pool" not in inspect(store.engine).get_table_names():
            return {}
        with store.session() as session:
            return pool_resources(session)
    except Exception as exc:
        log.warning("could not read pools for worker resources: %s", exc)
        return {}
    finally:
        store.dispose()
