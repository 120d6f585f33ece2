"""Persisting executor events: state, times, host, external id, reason, and a Log row each.

Rules (Airflow's ``process_executor_events``, adapted to a scheduler that is the only DB
writer):

* Only task instances queued by the reporting scheduler's job (``queued_by_job_id``) are
  changed: when several schedulers share the database, an event about a TI that another
  scheduler has since adopted or queued again is not applied (an ``event_ignored`` Log row).
  The TIs are locked while the batch is applied, so a decision is never made on a state
  another scheduler is changing.
* ``queued``/``running`` events update a live attempt (same try, still queued/running).
* A terminal event for the attempt the database considers live sets ``success``, or
  ``up_for_retry`` (with ``next_try_at``) while tries remain, else ``failed``.
* An outcome-unknown event (``EventInfo.kind == "connection_lost"``: the attempt was lost
  with its Dask scheduler) is not the task's fault: it is tried again at once without being
  charged a try (``max_tries + 1``), and the reason says the outcome is unknown.
* An event that contradicts the database is not applied; it is logged with both sides as a
  ``event_ignored`` Log row. That covers an older try (the TI moved on), and a TI already
  finished or reset by recovery. One exception: a *success* of the same try for a TI that
  recovery reset to be scheduled again is accepted (the work is done; running it again would
  be a second success).
"""

from __future__ import annotations

import functools
import logging
import socket
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Executable, Table, bindparam, event, insert, inspect, or_
from sqlalchemy.orm import Session

from airdask.executors.events import EventInfo, reason_of
from airdask.scheduler.results import store_results
from airdask.scheduler.rules import should_retry
from airdask.state import LIVE_VALUES, TaskInstanceKey, TaskInstanceState, check_transition
from airdask.store.bulk import execute_many
from airdask.store.models import Log, TaskInstance, utcnow
from airdask.store.queries import select_instances

log = logging.getLogger(__name__)
S = TaskInstanceState
CHUNK = 400


def add_ti_log(session: Session, ti: TaskInstance, event: str, extra: str | None) -> None:
    """Add one Log row about ``ti``'s current try (the single-row twin of :class:`LogRows`)."""
    session.add(
        Log(
            event=event,
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            map_index=ti.map_index,
            try_number=ti.try_number,
            extra=extra,
        )
    )


def set_state(ti: TaskInstance, new: TaskInstanceState | None) -> None:
    """Change a TI's state through the transition table (raises on a forbidden change).

    Like any assignment of ``TaskInstance.state``, it is reported to the scheduler watching
    this thread's state changes (:func:`watch_states`)."""
    check_transition(ti.ti_state, new)
    ti.state = new.value if new is not None else None


class StateWatcher(Protocol):
    """What hears of every state change of a task instance object (the scheduler's
    :class:`~airdask.scheduler.readiness.Readiness`)."""

    def changed(self, ti: TaskInstance, old: str | None, new: str | None, known: bool) -> None:
        """``ti.state`` went from ``old`` to ``new``; ``known`` is False when the old value
        was never loaded (a new object)."""


_WATCHER: ContextVar[StateWatcher | None] = ContextVar("airdask_state_watcher", default=None)


@contextmanager
def watch_states(watcher: StateWatcher) -> Iterator[None]:
    """Report every assignment of ``TaskInstance.state`` made in this context (this thread:
    schedulers in other threads have their own) to ``watcher``.

    Why an attribute event and not a call each writer makes: what the scheduler keeps about
    a run (:mod:`.readiness`) is right only if it hears of every change, and a writer added
    later cannot forget this one. States written by Core UPDATEs are not reported: the
    trigger-rule decisions and expansions that readiness makes itself."""
    token = _WATCHER.set(watcher)
    try:
        yield
    finally:
        _WATCHER.reset(token)


@event.listens_for(TaskInstance.state, "set")
def _state_set(ti: TaskInstance, value: str | None, old: Any, initiator: Any) -> None:
    watcher = _WATCHER.get()
    if watcher is not None:
        known = old is None or isinstance(old, str)  # else NO_VALUE / NEVER_SET
        watcher.changed(ti, old if isinstance(old, str) else None, value, known)


def load_tis(
    session: Session, keys: Iterable[TaskInstanceKey], *, lock: bool = False
) -> dict[tuple[Any, ...], TaskInstance]:
    """TIs by primary ``(dag_id, task_id, run_id, map_index)``: one indexed query per run
    (and chunk of instances). ``lock`` locks them until the transaction ends (waiting for
    another scheduler that holds one), always in the same order, so that what is decided
    from them is still true when it is written."""
    # By (task_id, map_index), not task_id alone: an event batch about a few instances of a
    # task mapped 10,000 times must not load (and lock) the other instances. The plain
    # ``task_id IN`` beside it is what lets SQLite search the primary key: with the row-value
    # IN alone it reads every row of the run through ix_ti_run_state (O(run) per batch).
    by_run: dict[tuple[str, str], set[tuple[str, int]]] = defaultdict(set)
    for key in keys:
        by_run[(key.dag_id, key.run_id)].add((key.task_id, key.map_index))
    found: dict[tuple[Any, ...], TaskInstance] = {}
    for (dag_id, run_id), wanted in sorted(by_run.items()):
        for stmt in select_instances(dag_id, run_id, wanted, chunk=CHUNK):
            if lock:
                stmt = stmt.order_by(TaskInstance.task_id, TaskInstance.map_index).with_for_update(
                    key_share=True
                )
            for ti in session.scalars(stmt):
                found[(ti.dag_id, ti.task_id, ti.run_id, ti.map_index)] = ti
    return found


#: The columns the scheduler changes on a task instance while it runs.
TI_COLUMNS = (
    "state",
    "try_number",
    "max_tries",
    "queued_dttm",
    "queued_by_job_id",
    "start_date",
    "end_date",
    "duration",
    "next_try_at",
    "external_executor_id",
    "hostname",
    "reason",
    "executor",
)


def detach(session: Session, tis: Iterable[TaskInstance]) -> None:
    """Stop tracking ``tis`` so their changes are written by :func:`write_back` only."""
    for ti in tis:
        session.expunge(ti)


_TI_TABLE = cast(Table, TaskInstance.__table__)
_LOG_TABLE = cast(Table, Log.__table__)
_PK = ("dag_id", "task_id", "run_id", "map_index")


@functools.cache
def _write_back_stmt(columns: tuple[str, ...]) -> Executable:
    """UPDATE task_instance SET <columns>, updated_at WHERE <primary key> (Core, executemany)."""
    return cast(
        Executable,
        _TI_TABLE.update()
        .where(*[_TI_TABLE.c[name] == bindparam(f"pk_{name}") for name in _PK])
        .values({name: bindparam(name) for name in (*columns, "updated_at")}),
    )


def write_back(session: Session, tis: Iterable[TaskInstance]) -> None:
    """Persist detached TIs: the columns of :data:`TI_COLUMNS` each one changed since it was
    loaded, with one UPDATE-by-primary-key executemany per set of changed columns (the hot
    path: an ORM flush of hundreds of objects costs several times more). A TI that changed
    nothing is not written.

    Why only what changed: an UPDATE that leaves the state columns out leaves their indexes
    alone (SQLite rewrites only the indexes of the columns it sets; PostgreSQL can make it a
    heap-only update), and most writes change two or three columns, not thirteen."""
    now = utcnow()
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for ti in tis:
        changed = inspect(ti).committed_state
        columns = tuple(name for name in TI_COLUMNS if name in changed)
        if not columns:
            continue
        row = {
            "pk_dag_id": ti.dag_id,
            "pk_task_id": ti.task_id,
            "pk_run_id": ti.run_id,
            "pk_map_index": ti.map_index,
            "updated_at": now,
        }
        for name in columns:
            row[name] = getattr(ti, name)
        groups[columns].append(row)
    connection = session.connection()
    for columns, rows in groups.items():
        execute_many(connection, _write_back_stmt(columns), rows)


@dataclass
class Outcomes:
    """What applying a batch of events changed."""

    finished: list[TaskInstance] = field(default_factory=list)  # success / failed
    retrying: list[TaskInstance] = field(default_factory=list)
    runs: set[tuple[str, str]] = field(default_factory=set)  # runs with a settled TI
    ignored: int = 0
    #: (ti, try_number, info) of successes that carry a return value (see .results)
    results: list[tuple[TaskInstance, int, EventInfo]] = field(default_factory=list)


def _info(value: Any) -> EventInfo:
    if isinstance(value, EventInfo):
        return value
    return EventInfo(reason_of(value) or "", kind="unknown")


#: What :class:`LogRows` inserts: every column but the id, each a parameter of its name.
_LOG_INSERT = insert(_LOG_TABLE).values(
    {c.name: bindparam(c.name) for c in _LOG_TABLE.columns if not c.primary_key}
)


class LogRows:
    """Log rows collected during a batch and inserted at once (an executemany)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, ti: TaskInstance, event: str, try_number: int, extra: str) -> None:
        self.rows.append(
            {
                "dttm": utcnow(),
                "event": event,
                "dag_id": ti.dag_id,
                "task_id": ti.task_id,
                "run_id": ti.run_id,
                "map_index": ti.map_index,
                "try_number": try_number,
                "extra": extra,
            }
        )

    def flush(self, session: Session) -> None:
        if self.rows:  # not the ORM's bulk insert: no ORM work per row
            execute_many(session.connection(), _LOG_INSERT, self.rows)
            self.rows = []


def apply_events(
    session: Session,
    events: Mapping[TaskInstanceKey, tuple[TaskInstanceState | None, Any]],
    *,
    retry_delay: Callable[[TaskInstance], float],
    job_id: int | None = None,
    now: datetime | None = None,
) -> Outcomes:
    """Apply executor events to their task instances (see the module docstring).

    :param job_id: the scheduler job whose executor reported the events: only task instances
        that job queued (``queued_by_job_id``) are changed. ``None`` applies events to any
        task instance (for tools and tests that play the executor)."""
    now = now or utcnow()
    out = Outcomes()
    events = _record_external_ids(session, events, job_id)
    tis = load_tis(session, events, lock=True)
    detach(session, tis.values())
    changed: list[TaskInstance] = []
    logs = LogRows()
    for key, (state, raw_info) in events.items():
        ti = tis.get(key.primary)
        info = _info(raw_info)
        if ti is None:
            log.warning("event %s for unknown task instance %s ignored", state, key)
            out.ignored += 1
            continue
        if job_id is not None and ti.queued_by_job_id != job_id:
            extra = (
                f"the executor of scheduler job {job_id} reports try {key.try_number} "
                f"{state.value if state else 'none'} ({info.reason}) but the task instance "
                f"is now queued by job {ti.queued_by_job_id} (try {ti.try_number}, "
                f"{ti.state or 'none'})"
            )
            _ignore(logs, out, ti, key, extra)
            continue
        if state in (S.QUEUED, S.RUNNING):
            if _apply_progress(ti, key, state, info):
                changed.append(ti)
            continue
        if state not in (S.SUCCESS, S.FAILED):
            log.warning("event %s for %s: not a state an executor reports; ignored", state, key)
            out.ignored += 1
            continue
        if ti.try_number != key.try_number or ti.state not in LIVE_VALUES:
            late_success = (
                state == S.SUCCESS
                and ti.try_number == key.try_number
                and ti.state in (None, S.SCHEDULED.value)
            )
            if not late_success:
                extra = (
                    f"executor reports try {key.try_number} {state.value} ({info.reason}) "
                    f"but the database has try {ti.try_number} in state {ti.state or 'none'}"
                )
                _ignore(logs, out, ti, key, extra)
                continue
            logs.add(ti, "late_success_accepted", key.try_number, info.reason)
        _apply_terminal(logs, ti, key, state, info, now, retry_delay, out)
        changed.append(ti)
    write_back(session, changed)
    store_results(session, out.results)
    logs.flush(session)
    return out


#: UPDATE task_instance SET external_executor_id WHERE <primary key> AND the try is the
#: live one queued by the reporting job (Core, executemany).
_EXTERNAL_ID = (
    _TI_TABLE.update()
    .where(
        *[_TI_TABLE.c[name] == bindparam(f"pk_{name}") for name in _PK],
        _TI_TABLE.c.try_number == bindparam("pk_try_number"),
        or_(*[_TI_TABLE.c.state == live for live in LIVE_VALUES]),  # no IN: executemany
    )
    .values(external_executor_id=bindparam("ext"), updated_at=bindparam("now"))
)
_EXTERNAL_ID_OF_JOB = _EXTERNAL_ID.where(_TI_TABLE.c.queued_by_job_id == bindparam("job"))


def _record_external_ids(
    session: Session,
    events: Mapping[TaskInstanceKey, tuple[TaskInstanceState | None, Any]],
    job_id: int | None,
) -> Mapping[TaskInstanceKey, tuple[TaskInstanceState | None, Any]]:
    """Write the external ids of QUEUED events in one conditional executemany, without
    loading their task instances; return the events still to apply.

    Half of all events are these (one per attempt, as it is handed to the cluster) and all
    they change is ``external_executor_id``. The WHERE clause is :func:`_apply_progress`'s
    rule (same try, still live) and the job check of :func:`apply_events`; when fewer rows
    match than there are events, every one of them goes the ordinary way as well, which
    writes nothing for those done here (the id is already there) and says why each of the
    others is not applied."""
    now = utcnow()
    done, rows = set(), []
    for key in sorted(events, key=_lock_order):
        state, raw_info = events[key]
        external_id = _info(raw_info).external_executor_id if state == S.QUEUED else None
        if not external_id:
            continue
        done.add(key)
        rows.append(
            {
                "pk_dag_id": key.dag_id,
                "pk_task_id": key.task_id,
                "pk_run_id": key.run_id,
                "pk_map_index": key.map_index,
                "pk_try_number": key.try_number,
                "ext": external_id,
                "now": now,
                "job": job_id,  # read by _EXTERNAL_ID_OF_JOB only
            }
        )
    if not rows:
        return events
    stmt = _EXTERNAL_ID if job_id is None else _EXTERNAL_ID_OF_JOB
    if execute_many(session.connection(), stmt, rows) != len(rows):
        return events
    return {key: event for key, event in events.items() if key not in done}


def _lock_order(key: TaskInstanceKey) -> tuple[str, str, str, int]:
    """The order :func:`load_tis` locks task instances in (run, then task and map index)."""
    return (key.dag_id, key.run_id, key.task_id, key.map_index)


def _ignore(
    logs: LogRows, out: Outcomes, ti: TaskInstance, key: TaskInstanceKey, extra: str
) -> None:
    """An event that contradicts the database: logged, an ``event_ignored`` row, counted."""
    log.warning("%s: %s; ignored", key, extra)
    logs.add(ti, "event_ignored", key.try_number, extra)
    out.ignored += 1


def _apply_progress(
    ti: TaskInstance, key: TaskInstanceKey, state: TaskInstanceState, info: EventInfo
) -> bool:
    if ti.try_number != key.try_number or ti.state not in LIVE_VALUES:
        return False
    if info.external_executor_id and info.external_executor_id != ti.external_executor_id:
        ti.external_executor_id = info.external_executor_id  # else nothing to write
    if state == S.RUNNING and ti.state == S.QUEUED.value:
        set_state(ti, S.RUNNING)
        ti.start_date = info.started_at or utcnow()
        ti.hostname = info.hostname or info.worker or ti.hostname
    return True


def _apply_terminal(
    logs: LogRows,
    ti: TaskInstance,
    key: TaskInstanceKey,
    state: TaskInstanceState,
    info: EventInfo,
    now: datetime,
    retry_delay: Callable[[TaskInstance], float],
    out: Outcomes,
) -> None:
    ti.start_date = info.started_at or ti.start_date or ti.queued_dttm or now
    ti.end_date = info.ended_at or now
    ti.duration = max((ti.end_date - ti.start_date).total_seconds(), 0.0)
    ti.hostname = info.hostname or info.worker or ti.hostname or socket.gethostname()
    if info.external_executor_id:
        ti.external_executor_id = info.external_executor_id
    reason = info.reason
    if info.outcome_unknown and state != S.SUCCESS:
        # Lost with its Dask scheduler (or its broker): not the task's fault, so it is
        # tried again at once without being charged a try (ADR 0004).
        set_state(ti, S.UP_FOR_RETRY)
        ti.max_tries += 1
        ti.next_try_at = now
        reason = f"outcome unknown, retried without charging a try: {reason}"
        ti.reason = f"{reason} (try {key.try_number})"
        out.retrying.append(ti)
    elif state == S.SUCCESS:
        set_state(ti, S.SUCCESS)
        # After retries, keep why the earlier try failed: the table shows what happened.
        earlier = ti.reason if key.try_number > 1 else None
        ti.reason = f"succeeded on try {key.try_number} after: {earlier}" if earlier else None
        out.finished.append(ti)
        if info.result is not None:
            out.results.append((ti, key.try_number, info))
    elif should_retry(key.try_number, ti.max_tries):
        set_state(ti, S.UP_FOR_RETRY)
        delay = retry_delay(ti)
        ti.next_try_at = now + timedelta(seconds=delay)
        ti.reason = f"{reason} (try {key.try_number} of {ti.max_tries + 1}; retry in {delay:g}s)"
        out.retrying.append(ti)
    else:
        set_state(ti, S.FAILED)
        ti.reason = reason
        out.finished.append(ti)
    out.runs.add((ti.dag_id, ti.run_id))
    extra = f"{reason} on {ti.hostname}" if reason else f"on {ti.hostname}"
    logs.add(ti, ti.state or "none", key.try_number, extra)
