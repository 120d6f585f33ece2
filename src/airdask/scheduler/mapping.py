"""Mapping over an upstream's result: the task instances made when the upstream succeeds.

A task mapped over a literal list has its instances from the start (:func:`.runs.start_run`).
One mapped over an upstream's return value (``expand(op_args=extract.output)``) starts with
a single placeholder instance (``map_index`` -1). When trigger rules let it run,
:func:`expand_from_result` reads the upstream's result (:func:`.results.results_for`: a
mapped upstream gives the list of its instances' results) and, in bulk:

* a list of n > 0 elements: the placeholder is replaced by n instances ``0..n-1``, all
  ``scheduled`` (one DELETE, one multi-row INSERT copying the placeholder's pool, priority,
  retries ...);
* an empty list: the placeholder is ``skipped`` (as in Airflow);
* no result, or a value that is not a list: the placeholder ``failed``, with the reason.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, delete, insert, select, update
from sqlalchemy.orm import Session

from airdask.dag import BaseTask
from airdask.scheduler.results import MissingResultError, results_for
from airdask.scheduler.runs import EMPTY_MAP_REASON
from airdask.state import TaskInstanceState
from airdask.store.db import analyze_after_insert
from airdask.store.models import TaskInstance, utcnow

S = TaskInstanceState
#: The placeholder's columns its instances take.
_COPIED = ("max_tries", "pool", "pool_slots", "queue", "priority_weight", "executor_config")


def expand_from_result(
    session: Session, dag_id: str, run_id: str, task: BaseTask, in_run: ColumnElement[bool]
) -> tuple[str, int]:
    """Expand ``task``'s placeholder (see the module docs); returns (the state its
    instances now have, how many there are)."""
    assert task.map_from is not None
    placeholder = (TaskInstance.task_id == task.task_id) & (TaskInstance.map_index == -1)
    waiting = in_run & placeholder & TaskInstance.state.is_(None)
    now = utcnow()
    try:
        value = results_for(session, (dag_id, run_id), task.map_from)
    except MissingResultError as exc:
        return _settle(session, waiting, S.FAILED, f"cannot expand: {exc}", now)
    if not isinstance(value, (list, tuple)):
        reason = (
            f"cannot expand over the result of {task.map_from!r}: it must be a list, "
            f"got {type(value).__name__}"
        )
        return _settle(session, waiting, S.FAILED, reason, now)
    if not value:
        return _settle(session, waiting, S.SKIPPED, EMPTY_MAP_REASON, now)
    columns = [getattr(TaskInstance, name) for name in _COPIED]
    row = session.execute(select(*columns).where(waiting)).one_or_none()
    if row is None:  # another pass expanded it already
        return S.SCHEDULED.value, 0
    template: dict[str, Any] = dict(row._mapping)
    session.execute(
        delete(TaskInstance).where(waiting).execution_options(synchronize_session=False)
    )
    rows = [
        {
            **template,
            "dag_id": dag_id,
            "task_id": task.task_id,
            "run_id": run_id,
            "map_index": i,
            "try_number": 0,
            "state": S.SCHEDULED.value,
            "stuck_in_queued_count": 0,
            "updated_at": now,
        }
        for i in range(len(value))
    ]
    session.execute(insert(TaskInstance), rows)
    analyze_after_insert(session, TaskInstance.__tablename__, len(rows))
    return S.SCHEDULED.value, len(rows)


def _settle(
    session: Session, waiting: ColumnElement[bool], state: S, reason: str, now: Any
) -> tuple[str, int]:
    session.execute(
        update(TaskInstance)
        .where(waiting)
        .values(state=state.value, reason=reason, end_date=now)
        .execution_options(synchronize_session=False)
    )
    return state.value, 1
