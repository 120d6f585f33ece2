"""Readiness: trigger rules for a run's waiting task instances, and queueing the ready ones.

Both work on indexed state columns and touch only what is waiting or ready: the task
instances with no state in one changed run (and their upstream states), and the
``scheduled``/due ``up_for_retry`` ones, highest ``priority_weight`` first, within the pool
open slots and the pass's budget.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from airdask.commands import Command
from airdask.dag import DAG
from airdask.scheduler.claims import lock_pools
from airdask.scheduler.events import set_state, write_back
from airdask.scheduler.mapping import expand_from_result
from airdask.scheduler.pools import SlotBudget
from airdask.scheduler.rules import Decision, UpstreamCounts, decision_state, evaluate
from airdask.state import DagRunState, TaskInstanceState, check_transition
from airdask.store.models import DagRun, TaskInstance, utcnow
from airdask.store.queries import pool_usage

S = TaskInstanceState
#: ``command_for(session, ti, now)``: the command, or None after failing the TI with a reason.
CommandFor = Callable[[Session, TaskInstance, datetime], Command | None]
#: ``executor_for(session, ti, now)``: the id of the executor the TI goes to, or None after
#: failing the TI with a reason (its task names an executor that is not configured).
ExecutorFor = Callable[[Session, TaskInstance, datetime], str | None]


def evaluate_run(session: Session, dag: DAG, run_id: str) -> tuple[int, bool]:
    """Apply trigger rules to the run's state-none TIs, in topological order so a skip or
    upstream_failed cascades at once. Returns (state changes, whether any TI settled
    without running, i.e. the run must be looked at again).

    A task's instances are decided together: the instances of a mapped task wait for the
    same upstream tasks, and an upstream that is mapped counts all its instances. So the
    work is a few grouped queries and one UPDATE per task that moves, however many
    instances it has (10,000 mapped instances are one statement)."""
    in_run = (TaskInstance.dag_id == dag.dag_id) & (TaskInstance.run_id == run_id)
    waiting: dict[str, int] = {
        task_id: int(n)
        for task_id, n in session.execute(
            select(TaskInstance.task_id, func.count())
            .where(in_run, TaskInstance.state.is_(None))
            .group_by(TaskInstance.task_id)
        )
    }
    if not waiting:
        return 0, False
    known = [t for t in waiting if dag.has_task(t)]
    upstream_ids = set().union(*(dag.get_task(t).upstream_task_ids for t in known))
    states: dict[str, Counter[str | None]] = defaultdict(Counter)
    for task_id, state, n in session.execute(
        select(TaskInstance.task_id, TaskInstance.state, func.count())
        .where(in_run, TaskInstance.task_id.in_(upstream_ids | set(waiting)))
        .group_by(TaskInstance.task_id, TaskInstance.state)
    ):
        states[task_id][state] += int(n)
    changed, settled = 0, False
    now = utcnow()
    for task_id in dag.topological_order():
        if task_id not in waiting:
            continue
        task = dag.get_task(task_id)
        ups: Counter[str | None] = Counter()
        for upstream in task.upstream_task_ids:
            ups.update(states.get(upstream) or {None: 1})  # no TI yet: not done
        counts = UpstreamCounts.of_counts(ups)
        decision = evaluate(task.trigger_rule, counts)
        if decision is Decision.WAIT:
            continue
        new = decision_state(decision)
        check_transition(None, new)
        assert new is not None
        n = waiting[task_id]
        if decision is Decision.RUN and task.map_from is not None:
            # Mapped over an upstream's result: its instances are made now (one bulk insert).
            state, made = expand_from_result(session, dag.dag_id, run_id, task, in_run)
            states[task_id][None] -= n
            states[task_id][state] += made
            changed += max(made, 1)
            settled = settled or state != S.SCHEDULED.value
            continue
        values: dict[str, Any] = {"state": new.value}
        if decision is not Decision.RUN:
            values["end_date"] = now
            values["reason"] = f"trigger rule {task.trigger_rule}: upstream {_describe(counts)}"
            settled = True
        _set_waiting(session, in_run, [task_id], values)
        states[task_id][None] -= n
        states[task_id][new.value] += n
        changed += n
    gone = [t for t in waiting if not dag.has_task(t)]
    if gone:
        for task_id in gone:
            _set_waiting(
                session,
                in_run,
                [task_id],
                {
                    "state": S.REMOVED.value,
                    "reason": f"task {task_id!r} is no longer in DAG {dag.dag_id!r}",
                },
            )
            changed += waiting[task_id]
    return changed, settled


def _set_waiting(
    session: Session, in_run: ColumnElement[bool], task_ids: list[str], values: dict[str, Any]
) -> None:
    """Set ``values`` on the state-none TIs of ``task_ids`` in one statement."""
    session.execute(
        update(TaskInstance)
        .where(in_run, TaskInstance.task_id.in_(task_ids), TaskInstance.state.is_(None))
        .values(**values)
        .execution_options(synchronize_session=False)
    )


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
    budget = SlotBudget(
        open_pool_slots(session, lock_pools(session)), total=total, executor_open=executor_slots
    )
    if budget.exhausted:
        return []
    now = utcnow()
    ready = (TaskInstance.state == S.SCHEDULED.value) | (
        (TaskInstance.state == S.UP_FOR_RETRY.value) & (TaskInstance.next_try_at <= now)
    )
    stmt = (
        select(TaskInstance)
        .join(
            DagRun,
            (DagRun.dag_id == TaskInstance.dag_id) & (DagRun.run_id == TaskInstance.run_id),
        )
        .where(ready, DagRun.state == DagRunState.RUNNING.value, scope)
        .order_by(TaskInstance.priority_weight.desc(), TaskInstance.task_id, TaskInstance.map_index)
    )
    full = budget.full_pools()
    if full:
        stmt = stmt.where(TaskInstance.pool.not_in(full))
    queued: list[tuple[TaskInstance, Command]] = []
    stmt = stmt.limit(budget.total * 4).with_for_update(
        of=TaskInstance, skip_locked=True, key_share=True
    )
    for ti in session.scalars(stmt).all():
        if budget.exhausted:
            break
        executor = executor_for(session, ti, now) if executor_for is not None else ti.executor
        if executor_for is not None and executor is None:
            continue
        if budget.take(ti.pool, ti.pool_slots, executor) is not None:
            continue
        command = command_for(session, ti, now)
        if command is None:
            continue
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
    write_back(session, (ti for ti, _ in queued))
    return queued


def _describe(ups: UpstreamCounts) -> str:
    parts = [
        f"{n} {name}"
        for name, n in (
            ("success", ups.success),
            ("failed", ups.failed),
            ("upstream_failed", ups.upstream_failed),
            ("skipped", ups.skipped),
        )
        if n
    ]
    return ", ".join(parts) or "none finished"
