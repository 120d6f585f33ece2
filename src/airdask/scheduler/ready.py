"""Queueing the ready task instances (trigger rules are :mod:`.readiness`'s).

It works on indexed state columns and touches only what is ready: the ``scheduled``/due
``up_for_retry`` task instances, highest ``priority_weight`` first, within the pool open
slots and the pass's budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from airdask.commands import Command
from airdask.dag import DAG
from airdask.scheduler.claims import lock_pools
from airdask.scheduler.events import set_state, write_back
from airdask.scheduler.pools import SlotBudget
from airdask.scheduler.readiness import Readiness
from airdask.state import DagRunState, TaskInstanceState
from airdask.store.models import DagRun, TaskInstance, utcnow
from airdask.store.queries import pool_usage

S = TaskInstanceState
#: Rows of the second page of a pass whose first page had rows that did not fit.
HEADROOM = 64
#: ``command_for(session, ti, now)``: the command, or None after failing the TI with a reason.
CommandFor = Callable[[Session, TaskInstance, datetime], Command | None]
#: ``executor_for(session, ti, now)``: the id of the executor the TI goes to, or None after
#: failing the TI with a reason (its task names an executor that is not configured).
ExecutorFor = Callable[[Session, TaskInstance, datetime], str | None]


def evaluate_run(session: Session, dag: DAG, run_id: str) -> tuple[int, bool]:
    """Apply trigger rules to the run's waiting task instances, read in full, in topological
    order so a skip or upstream_failed cascades at once. Returns (task instances changed,
    whether any settled without running, i.e. the run must be looked at again).

    The scheduler keeps what it read for the next passes (:class:`.readiness.Readiness`);
    this is the same evaluation from a fresh read, for one-off use."""
    return Readiness().evaluate(session, dag, run_id)


def open_pool_slots(session: Session, slots: Mapping[str, int] | None = None) -> dict[str, int]:
    """Open slots per pool: slots (read here unless given) minus the pool_slots of its
    queued and running TIs (:func:`airdask.store.queries.pool_usage`)."""
    return {name: usage.open for name, usage in pool_usage(session, slots=slots).items()}


def queue_ready(
    session: Session,
    *,
    total: int,
    scope: ColumnElement[bool],
    job_id: int | None,
    command_for: CommandFor,
    executor_for: ExecutorFor | None = None,
    executor_slots: Mapping[str, int] | None = None,
) -> list[tuple[TaskInstance, Command]]:
    """Mark up to ``total`` ready TIs of runs in ``scope`` QUEUED with the next try_number,
    within pool open slots, highest priority first; return them with their commands.

    With ``executor_for``, each TI also needs an open slot of its executor
    (``executor_slots``, by id) and records that executor's id in its ``executor`` column;
    a TI whose executor is full stays as it is for a later pass.

    Several schedulers may do this at once (:mod:`.claims`): the pool rows are locked first,
    so the open slots counted here stay true until this transaction commits, and each ready
    TI is locked ``SKIP LOCKED``."""
    if total <= 0:
        return []
    pool_open = open_pool_slots(session, lock_pools(session))
    # No more rows than the open slots could take.
    total = min(total, sum(max(n, 0) for n in pool_open.values()))
    budget = SlotBudget(pool_open, total=total, executor_open=executor_slots)
    if budget.exhausted:
        return []
    now = utcnow()
    full = budget.full_pools()
    # One query per state, each in the order of ix_ti_ready, so that each reads its first
    # rows from that index instead of sorting every ready task instance (all N of a
    # fan-out's, on every pass); the two are merged here in the same order. A first page
    # holds only what the budget can take: every row is an ORM object loaded and locked,
    # and at scale most passes take every row they read. Only rows that did not fit (an
    # executor full, a pool's last slots too few) make a second page, of HEADROOM more.
    queued: list[tuple[TaskInstance, Command]] = []
    seen: set[tuple[str, str, str, int]] = set()
    offset, page = 0, budget.total
    for _ in range(2):
        pages = [
            _ready_in_state(
                session, S.SCHEDULED, scope=scope, full=full, limit=page, offset=offset
            ),
            _ready_in_state(
                session, S.UP_FOR_RETRY, scope=scope, full=full, limit=page, offset=offset,
                now=now,
            ),
        ]  # fmt: skip
        # (another scheduler's commit between the pages may shift a row into both)
        candidates = sorted(
            (ti for rows in pages for ti in rows if _identity(ti) not in seen),
            key=lambda ti: (-ti.priority_weight, ti.task_id, ti.map_index),
        )
        left_out = 0
        for ti in candidates:
            seen.add(_identity(ti))
            if budget.exhausted or not _queue_one(
                session, ti, now, queued, budget=budget, job_id=job_id,
                command_for=command_for, executor_for=executor_for,
            ):  # fmt: skip
                left_out += 1
        more = any(len(rows) == page for rows in pages)
        if budget.exhausted or not left_out or not more:
            break
        offset, page = offset + page, HEADROOM
    write_back(session, (ti for ti, _ in queued))
    return queued


def _identity(ti: TaskInstance) -> tuple[str, str, str, int]:
    return ti.dag_id, ti.run_id, ti.task_id, ti.map_index


def _queue_one(
    session: Session,
    ti: TaskInstance,
    now: datetime,
    queued: list[tuple[TaskInstance, Command]],
    *,
    budget: SlotBudget,
    job_id: int | None,
    command_for: CommandFor,
    executor_for: ExecutorFor | None,
) -> bool:
    """Mark ``ti`` QUEUED and add it to ``queued`` if its pool and executor have room and
    its command builds (False otherwise: it stays for a later pass, or failed)."""
    executor = executor_for(session, ti, now) if executor_for is not None else ti.executor
    if executor_for is not None and executor is None:
        return False
    if budget.take(ti.pool, ti.pool_slots, executor) is not None:
        return False
    command = command_for(session, ti, now)
    if command is None:
        return False
    session.expunge(ti)  # written back in one executemany below
    ti.executor = executor
    set_state(ti, S.QUEUED)
    ti.try_number += 1
    ti.queued_dttm = now
    ti.queued_by_job_id = job_id
    if ti.start_date is not None or ti.hostname is not None:  # a retry
        ti.start_date = ti.end_date = ti.duration = ti.next_try_at = None
        ti.external_executor_id = ti.hostname = None
    queued.append((ti, command))
    return True


def _ready_in_state(
    session: Session,
    state: TaskInstanceState,
    *,
    scope: ColumnElement[bool],
    full: set[str],
    limit: int,
    offset: int = 0,
    now: datetime | None = None,
) -> list[TaskInstance]:
    """``limit`` task instances from the ``offset``-th on, in ``state`` (due by ``now``, if
    given), of running runs in ``scope`` and pools not in ``full``, highest priority first,
    each locked ``SKIP LOCKED``."""
    where = [TaskInstance.state == state.value, DagRun.state == DagRunState.RUNNING.value, scope]
    if now is not None:
        where.append(TaskInstance.next_try_at <= now)
    if full:
        where.append(TaskInstance.pool.not_in(full))
    stmt = (
        select(TaskInstance)
        .join(
            DagRun,
            (DagRun.dag_id == TaskInstance.dag_id) & (DagRun.run_id == TaskInstance.run_id),
        )
        .where(*where)
        .order_by(TaskInstance.priority_weight.desc(), TaskInstance.task_id, TaskInstance.map_index)
        .limit(limit)
        .offset(offset)
        .with_for_update(of=TaskInstance, skip_locked=True, key_share=True)
    )
    return list(session.scalars(stmt))
