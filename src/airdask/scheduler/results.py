"""Task results: stored when a success is recorded, read back for downstream tasks.

A PythonTask's return value travels back with its outcome (``EventInfo.result``, encoded
on the worker by :func:`airdask.runner.encode_result`; ADR 0009) and is written here into
``task_result`` in the same transaction as the success. A downstream task that takes it
(``op_args=[extract]`` or ``extract.output``) gets it when its attempt is queued:
:func:`results_for` reads it and the value is pickled into the downstream's command.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import Executable, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from airdask.executors.events import EventInfo
from airdask.store.models import DagRun, TaskInstance, TaskResultRow, utcnow

#: (dag_id, run_id) of a run, or the DagRun itself.
RunRef = DagRun | tuple[str, str]


class MissingResultError(LookupError):
    """A result that is not stored: the task has not succeeded, or returns nothing."""


def decode(fmt: str, data: bytes) -> Any:
    """The value of a stored result (``format`` "json" or "pickle")."""
    if fmt == "json":
        return json.loads(data.decode())
    if fmt == "pickle":
        import cloudpickle

        return cloudpickle.loads(data)
    raise ValueError(f"unknown result format {fmt!r}")


def store_results(session: Session, rows: Iterable[tuple[TaskInstance, int, EventInfo]]) -> int:
    """Write the results of successes just recorded: (ti, try_number, info) each; a result
    of an earlier success of the same TI is replaced. Returns how many were written."""
    values = [
        {
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "task_id": ti.task_id,
            "map_index": ti.map_index,
            "try_number": try_number,
            "format": info.result_format or "pickle",
            "value": info.result,
            "created_at": utcnow(),
        }
        for ti, try_number, info in rows
        if info.result is not None
    ]
    if not values:
        return 0
    session.connection().execute(_upsert(session.get_bind().dialect.name), values)
    return len(values)


_TABLE = cast(Table, TaskResultRow.__table__)


@functools.cache
def _upsert(dialect: str) -> Executable:
    """``INSERT .. ON CONFLICT (primary key) DO UPDATE``: one statement (an executemany of
    multi-row VALUES) where a DELETE by key and an INSERT were two; SQLite ran that DELETE's
    row-value IN as a scan of the whole table, so each batch of successes cost O(results)."""
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(_TABLE)
    elif dialect == "sqlite":
        stmt = sqlite.insert(_TABLE)
    else:  # pragma: no cover - the two databases airdask runs on
        raise NotImplementedError(f"task results on {dialect}")
    replaced = ("try_number", "format", "value", "created_at")
    return cast(
        Executable,
        stmt.on_conflict_do_update(
            index_elements=["dag_id", "run_id", "task_id", "map_index"],
            set_={name: stmt.excluded[name] for name in replaced},
        ),
    )


def _run_key(run: RunRef) -> tuple[str, str]:
    return (run.dag_id, run.run_id) if isinstance(run, DagRun) else run


def result_of(session: Session, run: RunRef, task_id: str, map_index: int = -1) -> Any:
    """The stored value of one task instance; :class:`MissingResultError` when none is."""
    dag_id, run_id = _run_key(run)
    row = session.get(TaskResultRow, (dag_id, run_id, task_id, map_index))
    if row is None:
        where = f"task {task_id!r}" + (f" [{map_index}]" if map_index >= 0 else "")
        raise MissingResultError(
            f"{where} of run {run_id!r} of DAG {dag_id!r} has no result "
            f"({_why_missing(session, dag_id, run_id, task_id, map_index)})"
        )
    return decode(row.format, row.value)


def results_for(session: Session, run: RunRef, task_id: str) -> Any:
    """What a downstream task receives from ``task_id`` in ``run``: its value, or for a
    mapped task (task instances with ``map_index >= 0``) the list of its instances'
    values in ``map_index`` order.

    :raises MissingResultError: a task instance that has no stored result.
    """
    dag_id, run_id = _run_key(run)
    indexes = sorted(
        session.scalars(
            select(TaskInstance.map_index).where(
                TaskInstance.dag_id == dag_id,
                TaskInstance.run_id == run_id,
                TaskInstance.task_id == task_id,
                TaskInstance.map_index >= 0,
            )
        )
    )
    if not indexes:
        return result_of(session, run, task_id)
    rows = {
        row.map_index: row
        for row in session.scalars(
            select(TaskResultRow).where(
                TaskResultRow.dag_id == dag_id,
                TaskResultRow.run_id == run_id,
                TaskResultRow.task_id == task_id,
            )
        )
    }
    values = []
    for index in indexes:
        row = rows.get(index)
        if row is None:
            return result_of(session, run, task_id, index)  # raises, saying why
        values.append(decode(row.format, row.value))
    return values


def run_results(session: Session, dag_id: str, run_id: str) -> dict[tuple[str, int], Any]:
    """Every stored result of a run, ``(task_id, map_index) -> (format, data)`` (undecoded:
    a pickled value may need modules the caller has not imported yet)."""
    rows = session.execute(
        select(
            TaskResultRow.task_id,
            TaskResultRow.map_index,
            TaskResultRow.format,
            TaskResultRow.value,
        ).where(TaskResultRow.dag_id == dag_id, TaskResultRow.run_id == run_id)
    )
    return {(t, m): (fmt, bytes(value)) for t, m, fmt, value in rows}


def _why_missing(session: Session, dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    ti = session.get(TaskInstance, (dag_id, task_id, run_id, map_index))
    if ti is None:
        return "no such task instance"
    if ti.state != "success":
        return f"it is {ti.state or 'not started'}, not success"
    return "it succeeded without keeping a return value: only a PythonTask's is kept"


__all__ = [
    "MissingResultError",
    "RunRef",
    "decode",
    "result_of",
    "results_for",
    "run_results",
    "store_results",
]
