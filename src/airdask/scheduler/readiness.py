"""Incremental trigger rules: each pass costs what changed, not the size of the run (ADR 0011).

:func:`airdask.scheduler.ready.evaluate_run` reads every waiting task instance of a run and
the states of all their upstreams on every pass the run changed: a fan-in of N upstreams
(``[N tasks] >> end``) makes each pass read N rows, and a run of N tasks takes about N/100
passes, so the run costs O(N^2). Here the scheduler keeps, per run it works on, a
:class:`RunReadiness`:

* which tasks still wait (their instances have no state), and per waiting task the count
  of its upstream task instances in each finished state, out of how many there are (a
  mapped upstream counts all its instances; an upstream with no instance yet counts one);
* the finished task instances (a finished state is final: nothing sets it back).

It is built from one read of the run's ``(task_id, map_index, state)`` column tuples (no
ORM objects) and then kept up to date by what this scheduler itself writes: its own
trigger-rule decisions, and every change of a task instance object's state, which reaches
:meth:`Readiness.changed` by itself while the scheduler's passes watch them
(:func:`airdask.scheduler.events.watch_states`: outcomes of executor events, a command that
cannot be built, recovery resets, stuck-in-queued handling, whatever writer comes next). A
change of one upstream touches its downstreams' counts, and only those task instances are
evaluated again, in topological order, so a skip or ``upstream_failed`` cascades in the
same pass as before.

When the counts can be trusted: only while this scheduler is the only writer of the run's
task instances. That holds for a run owned by its job (``airdask run``) and for a
scheduler with no other live scheduler beside it (always so on SQLite). Otherwise (several
schedulers on one PostgreSQL database: :attr:`Readiness.trusted` is False) every
evaluation reads the run again, as before. A change that is not a step forward (back to
waiting: a recovery reset) drops its run, a pass that is rolled back drops them all, and
every running run is read again now and then (:meth:`Readiness.clear`, at the orphan
check), so a change made elsewhere costs latency, never a decision.

A task's instances are decided together, as in :func:`~airdask.scheduler.ready.evaluate_run`
(a full evaluation: a fresh :class:`RunReadiness`): one row per task in one executemany,
however many instances it has; a task mapped over an upstream's result is expanded when it
may run (:func:`~airdask.scheduler.mapping.expand_from_result`).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from airdask.dag import DAG, BaseTask
from airdask.scheduler.mapping import expand_from_result
from airdask.scheduler.rules import Decision, UpstreamCounts, decision_state, evaluate
from airdask.state import TaskInstanceState, check_transition
from airdask.store.db import analyze_after_insert
from airdask.store.models import TaskInstance, utcnow

S = TaskInstanceState
RunKey = tuple[str, str]
#: ``(task_id, map_index, state)`` of one task instance.
Row = tuple[str, int, "str | None"]
#: ``expand(task)``: make a mapped task's instances from its upstream's result; returns
#: (the state they have, how many; 0 when another pass made them already).
Expand = Callable[[BaseTask], tuple[str, int]]
#: Finished states, each with its slot in a waiting task's counts.
_SLOT = {
    S.SUCCESS.value: 0,
    S.SKIPPED.value: 1,
    S.FAILED.value: 2,
    S.UPSTREAM_FAILED.value: 3,
    S.REMOVED.value: 4,
}


@dataclass(frozen=True)
class Decided:
    """A trigger-rule decision for the waiting instances of one task."""

    task_id: str
    state: str
    reason: str | None
    ends: bool  # settled without running: it gets an end_date
    count: int  # task instances it changes
    written: bool = False  # already in the database (an expansion)


def _counts(slots: list[int], total: int) -> UpstreamCounts:
    return UpstreamCounts(
        total=total,
        success=slots[0],
        skipped=slots[1],
        failed=slots[2],
        upstream_failed=slots[3],
        removed=slots[4],
    )


class RunReadiness:
    """The waiting tasks of one run, their upstream counts, and what finished."""

    def __init__(self, dag: DAG, run_id: str, rows: Iterable[Row], order: dict[str, int]) -> None:
        self.dag = dag
        self.run_id = run_id
        self.order = order
        #: task instances per task; a task with none yet counts one (not done)
        self.instances: dict[str, int] = {}
        self.waiting: dict[str, int] = {}  # task -> its instances with no state
        self.finished: dict[tuple[str, int], str] = {}
        #: finished instances of mapped tasks, counted by slot (an unmapped task's one
        #: instance is looked up in ``finished``: no list per task of a 100,000-task run)
        mapped_done: dict[str, list[int]] = {}
        for task_id, map_index, state in rows:
            self.instances[task_id] = self.instances.get(task_id, 0) + 1
            if state is None:
                self.waiting[task_id] = self.waiting.get(task_id, 0) + 1
            elif state in _SLOT:
                self.finished[(task_id, map_index)] = state
                if map_index >= 0:
                    mapped_done.setdefault(task_id, [0] * 5)[_SLOT[state]] += 1
        #: sum(instances.values()), kept so that unfinished() costs nothing per pass
        self.instance_count = sum(self.instances.values())
        self.slots: dict[str, list[int]] = {}
        self.totals: dict[str, int] = {}
        for task_id in self.waiting:
            if dag.has_task(task_id):
                slots, total = [0] * 5, 0
                for up in dag.get_task(task_id).upstream_task_ids:
                    total += self.instances.get(up, 1)
                    counts = mapped_done.get(up)
                    if counts is not None:
                        for i, n in enumerate(counts):
                            slots[i] += n
                    else:
                        state = self.finished.get((up, -1))
                        if state is not None:
                            slots[_SLOT[state]] += 1
                self.slots[task_id], self.totals[task_id] = slots, total
        #: waiting tasks to evaluate at the next :meth:`evaluate`
        self.candidates: set[str] = set(self.waiting)
        #: set when what is kept here can no longer be trusted (read the run again)
        self.stale = False

    def note(self, task_id: str, map_index: int, state: str | None) -> None:
        """A task instance of this run is now in ``state`` (written by this scheduler)."""
        if state is None:
            return  # back to waiting: only recovery does that, and it invalidates the run
        left = self.waiting.get(task_id)
        if left is not None:  # its instances wait together: this one no longer does
            if left <= 1:
                del self.waiting[task_id]
                self.slots.pop(task_id, None)
                self.totals.pop(task_id, None)
            else:
                self.waiting[task_id] = left - 1
        if state not in _SLOT or (task_id, map_index) in self.finished:
            return
        self.finished[(task_id, map_index)] = state
        if not self.dag.has_task(task_id):
            return
        slot = _SLOT[state]
        for down in self.dag.get_task(task_id).downstream_task_ids:
            counts = self.slots.get(down)
            if counts is not None:
                counts[slot] += 1
                self.candidates.add(down)

    def unfinished(self) -> bool:
        """Whether a task instance of the run is surely not finished: more instances than
        finished ones. (False may still be a run with work left: its end is then read.)"""
        return self.instance_count > len(self.finished)

    def _expanded(self, task_id: str, made: int) -> None:
        """A placeholder (counted as one instance) became ``made`` instances."""
        self.instance_count += made - self.instances.get(task_id, 0)
        self.instances[task_id] = made
        for down in self.dag.get_task(task_id).downstream_task_ids:
            if down in self.totals:
                self.totals[down] += made - 1

    def evaluate(self, expand: Expand) -> list[Decided]:
        """Decide for the candidates (and what their decisions cascade to), upstream first."""
        heap = [(self.order.get(t, -1), t) for t in self.candidates]
        self.candidates = set()
        heapq.heapify(heap)
        decided: list[Decided] = []
        while heap:
            _, task_id = heapq.heappop(heap)
            count = self.waiting.get(task_id)
            if count is None:
                continue
            if not self.dag.has_task(task_id):
                reason = f"task {task_id!r} is no longer in DAG {self.dag.dag_id!r}"
                decided.append(Decided(task_id, S.REMOVED.value, reason, False, count))
                self._settle(task_id, S.REMOVED.value, heap)
                continue
            task = self.dag.get_task(task_id)
            ups = _counts(self.slots[task_id], self.totals[task_id])
            decision = evaluate(task.trigger_rule, ups)
            if decision is Decision.WAIT:
                continue
            new = decision_state(decision)
            assert new is not None
            if decision is Decision.RUN and task.map_from is not None:
                state, made = expand(task)
                if made == 0:  # made by another pass meanwhile: what is kept here is old
                    self.stale = True
                    continue
                decided.append(Decided(task_id, state, None, False, made, written=True))
                if state == S.SCHEDULED.value:
                    self._expanded(task_id, made)
                self._settle(task_id, state, heap)
                continue
            if decision is Decision.RUN:
                decided.append(Decided(task_id, new.value, None, False, count))
            else:
                reason = f"trigger rule {task.trigger_rule}: upstream {describe(ups)}"
                decided.append(Decided(task_id, new.value, reason, True, count))
            self._settle(task_id, new.value, heap)
        return decided

    def _settle(self, task_id: str, state: str, heap: list[tuple[int, str]]) -> None:
        """Every waiting instance of ``task_id`` is now in ``state``."""
        n = self.instances.get(task_id, 1)
        for map_index in [-1] if n <= 1 else range(n):  # a mapped task's are 0..n-1
            self.note(task_id, map_index, state)
        self.waiting.pop(task_id, None)
        self.slots.pop(task_id, None)
        self.totals.pop(task_id, None)
        for down in self.candidates:
            heapq.heappush(heap, (self.order.get(down, -1), down))
        self.candidates = set()


def describe(ups: UpstreamCounts) -> str:
    """``"3 success, 1 failed"``: the finished upstreams, for a decision's reason."""
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


_TI = cast(Table, TaskInstance.__table__)
#: Trigger-rule decisions, one row per task (all its waiting instances) in one executemany;
#: ``state IS NULL`` keeps a decision from overwriting what another writer did meanwhile.
_DECIDE = (
    _TI.update()
    .where(
        _TI.c.dag_id == bindparam("pk_dag_id"),
        _TI.c.run_id == bindparam("pk_run_id"),
        _TI.c.task_id == bindparam("pk_task_id"),
        _TI.c.state.is_(None),
    )
    .values(
        state=bindparam("state"),
        end_date=bindparam("end_date"),
        reason=bindparam("reason"),
        updated_at=bindparam("updated_at"),
    )
)


def write_decisions(session: Session, dag_id: str, run_id: str, decided: Iterable[Decided]) -> int:
    """Write trigger-rule decisions (each checked against the transition table); those an
    expansion wrote already are left out."""
    now = utcnow()
    rows = []
    for d in decided:
        if d.written:
            continue
        check_transition(None, S(d.state))
        rows.append(
            {
                "pk_dag_id": dag_id,
                "pk_run_id": run_id,
                "pk_task_id": d.task_id,
                "state": d.state,
                "end_date": now if d.ends else None,
                "reason": d.reason,
                "updated_at": now,
            }
        )
    if rows:
        session.connection().execute(_DECIDE, rows)
        # A fan-out's first decisions turn thousands of rows 'scheduled' at once, after
        # start_run analyzed them without a state: planned on those statistics, the ready
        # query read and sorted every scheduled row of the run on every pass (PostgreSQL,
        # 10,000 tasks: 5.5 ms a query, 2.6 s of a 16 s run), where fresh ones make it
        # read ix_ti_ready in order up to its LIMIT.
        analyze_after_insert(session, TaskInstance.__tablename__, len(rows))
    return len(rows)


def topological_index(dag: DAG) -> dict[str, int]:
    """Each task's position in a topological order (Kahn's algorithm, O(tasks + edges))."""
    indegree = {t: len(task.upstream_task_ids) for t, task in dag.task_dict.items()}
    ready = [t for t, n in indegree.items() if n == 0]
    order: dict[str, int] = {}
    while ready:
        task_id = ready.pop()
        order[task_id] = len(order)
        for down in dag.task_dict[task_id].downstream_task_ids:
            indegree[down] -= 1
            if indegree[down] == 0:
                ready.append(down)
    return order


def read_run(session: Session, dag_id: str, run_id: str) -> list[Row]:
    """``(task_id, map_index, state)`` of every task instance of the run (column tuples)."""
    rows = session.execute(
        select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
        )
    )
    return [(task_id, map_index, state) for task_id, map_index, state in rows]


class Readiness:
    """The scheduler's :class:`RunReadiness` per run, and when to read a run again."""

    def __init__(self) -> None:
        self.runs: dict[RunKey, RunReadiness] = {}
        #: False while another scheduler may write the same runs (see the module docs)
        self.trusted = True
        self._orders: dict[str, tuple[DAG, dict[str, int]]] = {}

    def _order(self, dag: DAG) -> dict[str, int]:
        cached = self._orders.get(dag.dag_id)
        if cached is None or cached[0] is not dag:
            cached = self._orders[dag.dag_id] = (dag, topological_index(dag))
        return cached[1]

    def evaluate(self, session: Session, dag: DAG, run_id: str) -> tuple[int, bool]:
        """Apply trigger rules to what may have become decidable in the run; returns (task
        instances changed, whether any settled without running)."""
        key = (dag.dag_id, run_id)
        tracker = self.runs.get(key)
        if tracker is None or tracker.dag is not dag or not self.trusted:
            rows = read_run(session, dag.dag_id, run_id)
            tracker = self.runs[key] = RunReadiness(dag, run_id, rows, self._order(dag))
        in_run = (TaskInstance.dag_id == dag.dag_id) & (TaskInstance.run_id == run_id)

        def expand(task: BaseTask) -> tuple[str, int]:
            return expand_from_result(session, dag.dag_id, run_id, task, in_run)

        decided = tracker.evaluate(expand)
        write_decisions(session, dag.dag_id, run_id, decided)
        if tracker.stale:
            del self.runs[key]
        settled = any(d.ends or d.state != S.SCHEDULED.value for d in decided)
        return sum(d.count for d in decided), settled

    def note(self, ti: TaskInstance, state: str | None) -> None:
        """A task instance this scheduler wrote is now in ``state``."""
        tracker = self.runs.get((ti.dag_id, ti.run_id))
        if tracker is not None:
            tracker.note(ti.task_id, ti.map_index, state)

    def changed(self, ti: TaskInstance, old: str | None, new: str | None, known: bool) -> None:
        """Every state change of a task instance object while the scheduler watches
        (:func:`airdask.scheduler.events.watch_states`): noted when it only moves forward,
        else the run is read again (back to waiting, out of a finished state, an old state
        never loaded). A pass that is not committed clears everything (see :mod:`.loop`)."""
        key = (ti.dag_id, ti.run_id)
        if key not in self.runs:
            return
        if not known or new is None or old in _SLOT:
            del self.runs[key]
        else:
            self.runs[key].note(ti.task_id, ti.map_index, new)

    def surely_unfinished(self, key: RunKey) -> bool:
        """Whether what is kept of run ``key`` proves it has work left, so that finishing it
        needs no read of the database (False when nothing trusted is kept of it)."""
        tracker = self.runs.get(key)
        return self.trusted and tracker is not None and not tracker.stale and tracker.unfinished()

    def invalidate(self, runs: Iterable[RunKey]) -> None:
        """These runs changed in ways not noted: read them again when next evaluated."""
        for key in runs:
            self.runs.pop(key, None)

    def clear(self) -> None:
        self.runs.clear()
