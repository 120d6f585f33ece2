"""DagRuns: checking a DAG against the pools, creating runs, their task instances, finishing.

:func:`check_dag_pools` and :func:`parse_conf` are what the CLI calls *before* writing, so a
typo leaves nothing half-written; :func:`create_run` adds the run in the caller's session
(one transaction).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from airdask.dag import DAG
from airdask.params import ParamError
from airdask.scheduler.events import set_state
from airdask.state import UNFINISHED_STATES, DagRunState, TaskInstanceState
from airdask.store.db import analyze_after_insert
from airdask.store.models import DagRun, Log, Pool, TaskInstance, utcnow

S = TaskInstanceState


class RunError(ValueError):
    """A run that cannot be created: unknown pool, too many pool slots, bad conf."""


def check_conf(dag: DAG, conf: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run's params, or :class:`RunError` (one line) when ``conf`` does not fit the
    DAG's params (see :mod:`airdask.params`). Called before anything is written."""
    try:
        return dag.resolve_params(conf)
    except ParamError as exc:
        raise RunError(str(exc)) from None


def parse_conf(text: str | None) -> dict[str, Any] | None:
    """``--conf`` JSON as a dict; :class:`RunError` naming the JSON problem otherwise."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunError(f"--conf is not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(value, dict):
        raise RunError(f"--conf must be a JSON object, got {type(value).__name__}")
    return value


def check_dag_pools(dag: DAG, pools: Mapping[str, int]) -> list[str]:
    """Problems with the DAG's pools: unknown pools, pool_slots larger than the pool."""
    problems = []
    for task in dag.tasks:
        if task.pool not in pools:
            problems.append(
                f"task {task.task_id!r} of DAG {dag.dag_id!r} uses unknown pool {task.pool!r} "
                f"(create it with `airdask pools set {task.pool} SLOTS`)"
            )
        elif task.pool_slots > pools[task.pool]:
            problems.append(
                f"task {task.task_id!r} of DAG {dag.dag_id!r} needs {task.pool_slots} slots of "
                f"pool {task.pool!r}, which has only {pools[task.pool]}"
            )
    return problems


def pool_slots(session: Session) -> dict[str, int]:
    return {name: slots for name, slots in session.execute(select(Pool.name, Pool.slots))}


def new_run_id(session: Session, dag_id: str, now: datetime | None = None) -> str:
    base = f"manual__{(now or utcnow()).isoformat(timespec='microseconds')}"
    run_id, n = base, 1
    while session.get(DagRun, (dag_id, run_id)) is not None:
        n += 1
        run_id = f"{base}.{n}"
    return run_id


def create_run(
    session: Session,
    dag: DAG,
    *,
    conf: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    dag_file: str | None = None,
    scheduled_by_job_id: int | None = None,
    logical_date: datetime | None = None,
    data_interval: tuple[datetime, datetime] | None = None,
) -> DagRun:
    """A queued DagRun for ``dag`` (its task instances are created when a scheduler starts
    it). Checks the conf against the DAG's params and the pools first; :class:`RunError`
    lists every problem.

    :param logical_date: the date the run is for; a manual run's is its trigger time.
    :param data_interval: ``(start, end)``; a manual run's is ``(logical_date, logical_date)``.
    """
    check_conf(dag, conf)
    problems = check_dag_pools(dag, pool_slots(session))
    if problems:
        raise RunError("; ".join(problems))
    if run_id is not None and session.get(DagRun, (dag.dag_id, run_id)) is not None:
        raise RunError(f"DAG {dag.dag_id!r} already has a run {run_id!r}")
    now = utcnow()
    logical_date = logical_date or now
    start, end = data_interval or (logical_date, logical_date)
    run = DagRun(
        dag_id=dag.dag_id,
        run_id=run_id or new_run_id(session, dag.dag_id, now),
        logical_date=logical_date,
        data_interval_start=start,
        data_interval_end=end,
        state=DagRunState.QUEUED.value,
        conf=dict(conf) if conf is not None else None,
        dag_file=dag_file if dag_file is not None else dag.fileloc,
        queued_at=now,
        scheduled_by_job_id=scheduled_by_job_id,
    )
    session.add(run)
    session.add(Log(event="trigger", dag_id=dag.dag_id, run_id=run.run_id, extra=dag_file))
    session.flush()
    return run


def start_run(session: Session, run: DagRun, dag: DAG) -> int:
    """Create the run's task instances (no state yet) and mark it running.

    A task mapped over a literal list gets one task instance per element (``map_index``
    0..n-1), inserted in bulk; one mapped over an empty list gets a single
    instance (``map_index`` -1) that is skipped at once, as in Airflow.

    The caller holds the run's lock (:func:`.claims.claim_queued_runs`); the run's owner is
    left as it is (``airdask run`` owns its runs; a run of ``airdask scheduler`` has none,
    so every scheduler works on it)."""
    now = utcnow()
    count = insert_task_instances(session, _task_instance_rows(dag, run.run_id, now))
    run.state = DagRunState.RUNNING.value
    run.start_date = now
    return count


def _task_instance_rows(dag: DAG, run_id: str, now: datetime) -> Iterator[dict[str, Any]]:
    """The rows of a new run's task instances, made as they are inserted (a list of them
    all was the scheduler's peak memory at 100,000 tasks)."""
    weights = dag.priority_weights()
    for task in dag.tasks:
        row = {
            "dag_id": dag.dag_id,
            "task_id": task.task_id,
            "run_id": run_id,
            "map_index": -1,
            "try_number": 0,
            "max_tries": task.retries,
            "state": None,
            "pool": task.pool,
            "pool_slots": task.pool_slots,
            "queue": task.queue,
            "priority_weight": weights[task.task_id],
            "executor_config": task.executor_config_for_run() or None,
            "stuck_in_queued_count": 0,
            "updated_at": now,
            "end_date": None,
            "reason": None,
        }
        if task.map_over is None:
            yield row
        elif not task.map_over:
            skipped = {"state": S.SKIPPED.value, "end_date": now, "reason": EMPTY_MAP_REASON}
            yield {**row, **skipped}
        else:
            for i in range(len(task.map_over)):
                yield {**row, "map_index": i}


def insert_task_instances(session: Session, rows: Iterable[dict[str, Any]]) -> int:
    """Insert task instances in bulk statements of at most :data:`INSERT_CHUNK` rows (so
    that only that many rows are ever built at once); on PostgreSQL, ``ANALYZE`` the table
    after a large insert, in the same transaction (its own new rows count; see
    :func:`airdask.store.db.analyze_after_insert` for when). The number of rows inserted.

    Why: until the planner knows that a run has many rows, it costs a lookup by primary
    key ``(dag_id, task_id, run_id, map_index)`` the same as a scan of the run's rows
    through ``ix_ti_run_state`` (``dag_id, run_id, state``), and may take the smaller
    index: then every UPDATE of one task instance reads all of its run's (measured: 1,001
    rows read per UPDATE in a fresh run of 1,002; a run of 10,000 took 243 s, most of it
    in those UPDATEs). Autovacuum analyzes the table only a minute or more later, and a
    second run of the same DAG is as unknown to the statistics as the first."""
    count = 0
    it = iter(rows)
    while chunk := list(itertools.islice(it, INSERT_CHUNK)):
        session.execute(insert(TaskInstance), chunk)
        count += len(chunk)
    if count:
        analyze_after_insert(session, TaskInstance.__tablename__, count)
    return count


#: The most task instances one INSERT carries (and the scheduler holds as rows at once).
INSERT_CHUNK = 5_000


#: Why a task mapped over an empty list did not run.
EMPTY_MAP_REASON = "mapped over an empty list: nothing to run"


#: What :func:`fail_run` does to the task instances that have not finished and are not
#: live: the ones that never ran are skipped (as Airflow's "mark run failed" does), one
#: waiting for its retry fails (its try failed and there will be no other).
_ENDED_BY_FAILED_RUN = {None: S.SKIPPED, S.SCHEDULED: S.SKIPPED, S.UP_FOR_RETRY: S.FAILED}


def fail_run(session: Session, run: DagRun, reason: str) -> None:
    """End a run that cannot be scheduled (its DAG no longer loads) with ``reason``.

    Its waiting task instances change state through the transition table (see
    :data:`_ENDED_BY_FAILED_RUN`); live ones are left to finish and be recorded."""
    now = utcnow()
    waiting = [s.value for s in _ENDED_BY_FAILED_RUN if s is not None]
    for ti in session.scalars(
        select(TaskInstance).where(
            TaskInstance.dag_id == run.dag_id,
            TaskInstance.run_id == run.run_id,
            TaskInstance.state.is_(None) | TaskInstance.state.in_(waiting),
        )
    ):
        set_state(ti, _ENDED_BY_FAILED_RUN[ti.ti_state])
        ti.end_date, ti.reason = now, reason
    run.state, run.end_date = DagRunState.FAILED.value, now
    session.add(Log(event="run_failed", dag_id=run.dag_id, run_id=run.run_id, extra=reason))


_UNFINISHED = [s.value for s in UNFINISHED_STATES if s is not None]


def finish_runs(
    session: Session, runs: Iterable[DagRun], dags: Mapping[str, DAG]
) -> dict[tuple[str, str], str]:
    """Finish each of ``runs`` (running, locked by the caller: :func:`.claims.claim_running_runs`)
    whose task instances are all finished; return the new states.

    As in Airflow, a run fails when one of its leaves failed or is upstream_failed, and
    succeeds otherwise (skipped leaves included)."""
    finished: dict[tuple[str, str], str] = {}
    for run in runs:
        dag_id, run_id = run.dag_id, run.run_id
        in_run = (TaskInstance.dag_id == dag_id) & (TaskInstance.run_id == run_id)
        # The first unfinished one answers (a count would read every unfinished row).
        unfinished = session.scalar(
            select(TaskInstance.task_id)
            .where(in_run, TaskInstance.state.is_(None) | TaskInstance.state.in_(_UNFINISHED))
            .limit(1)
        )
        if unfinished is not None:
            continue
        failed = (TaskInstance.state == S.FAILED.value) | (
            TaskInstance.state == S.UPSTREAM_FAILED.value
        )
        failures = select(TaskInstance.task_id).where(in_run, failed)
        dag = dags.get(dag_id)
        if dag is not None:  # only leaves decide (Airflow); the failures are few, not the TIs
            leaves = {t.task_id for t in dag.leaves}
            leaf_failed = any(t in leaves for t in session.scalars(failures))
        else:
            leaf_failed = session.scalar(failures.limit(1)) is not None
        outcome = DagRunState.FAILED.value if leaf_failed else DagRunState.SUCCESS.value
        run.state = outcome
        run.end_date = utcnow()
        session.add(Log(event=f"run_{outcome}", dag_id=dag_id, run_id=run_id))
        finished[(dag_id, run_id)] = outcome
    return finished
