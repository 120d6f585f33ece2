"""Driving one DAG run to its end in this process: what ``airdask run``, the notebook API
(:func:`airdask.api.run_dag`) and the tests share.

The job owns only that run (``run_filter``), so a long-running ``airdask scheduler`` on the
same database leaves it alone and the job takes over nothing else.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from airdask.dag import DAG
from airdask.scheduler.executors import check_dag_executors
from airdask.scheduler.loop import PassResult, SchedulerJob
from airdask.scheduler.runs import RunError, create_run
from airdask.state import DagRunState
from airdask.store import DagRun, TaskInstance

_FINISHED_RUN = (DagRunState.SUCCESS.value, DagRunState.FAILED.value)
#: The largest share of the scheduler's time that counting the run for its progress takes.
PROGRESS_SHARE = 0.05
#: Most seconds between two reads of the run's state when no pass of the job finished it
#: (another process may end it: ``airdask tasks`` marking it, say).
STATE_RECHECK_SECONDS = 1.0


@dataclass
class RunProgress:
    """How far the run is: task instances by state (``"none"`` for no state yet)."""

    run_id: str
    counts: Counter[str] = field(default_factory=Counter)


@dataclass
class RunOutcome:
    run_id: str
    #: the run's state at the end: success, failed, or running/queued when interrupted
    state: str | None
    timed_out: bool
    elapsed: float
    dashboard_link: str | None

    @property
    def succeeded(self) -> bool:
        return self.state == DagRunState.SUCCESS.value


def drive_run(
    job: SchedulerJob,
    dag: DAG,
    *,
    conf: Mapping[str, Any] | None = None,
    dag_file: str | None = None,
    timeout: float | None = None,
    on_trigger: Callable[[str], None] | None = None,
    on_progress: Callable[[RunProgress], None] | None = None,
    progress_every: float = 0.5,
    handle_signals: bool = True,
) -> RunOutcome:
    """Register ``job``, trigger one run of ``dag``, and schedule it until it finishes.

    :param timeout: seconds; past them the executors are terminated (its attempts killed and
        recorded as such) and the outcome says ``timed_out``.
    :param on_trigger: called with the new run's id once it is created.
    :param on_progress: called with the counts by state at most every ``progress_every``
        seconds while the run goes on, and once at the end.
    :raises airdask.scheduler.runs.RunError: the run cannot be created (pools, run id, a
        task naming an executor the job does not host); the job is then recorded as failed
        and nothing else is written.
    """
    job.run_filter = []  # before register(): the job is a run's, never a scheduler
    job.register()
    try:
        problems = check_dag_executors(dag, job.executors.names)
        if problems:
            raise RunError("; ".join(problems))
        with job.store.session() as session:
            run_id = create_run(
                session, dag, conf=conf, dag_file=dag_file, scheduled_by_job_id=job.job_id
            ).run_id
    except Exception:
        job.stop(state="failed")
        raise
    job.run_filter = [(dag.dag_id, run_id)]
    if on_trigger is not None:
        on_trigger(run_id)
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    seen: dict[str, Any] = {"link": None, "timed_out": False, "state": None, "next": 0.0,
                            "read": False, "read_at": float("-inf")}  # fmt: skip

    def report(force: bool = False) -> None:
        now = time.monotonic()
        if on_progress is None or (not force and now < seen["next"]):
            return
        counts = _counts(job, dag.dag_id, run_id)
        seen["next"] = next_progress(now, time.monotonic() - now, every=progress_every)
        on_progress(RunProgress(run_id, counts))

    def on_pass(result: PassResult) -> None:
        # The link is gone once end() closed the connection: remember it while running.
        seen["link"] = seen["link"] or job.executors.dashboard_link
        # The passes that can end the run: one that finished it, or one that started runs
        # (a run that cannot start is failed there).
        seen["read"] = bool(result.started_runs) or (dag.dag_id, run_id) in (
            result.finished_runs or {}
        )
        report()

    def finished() -> bool:
        # Not a query a pass: the pass that ends the run says so (PassResult.finished_runs).
        now = time.monotonic()
        if seen["read"] or now - seen["read_at"] >= STATE_RECHECK_SECONDS:
            seen["read_at"] = now
            seen["state"] = _run_state(job, dag.dag_id, run_id)
            if seen["state"] in _FINISHED_RUN:
                return True
        if deadline is not None and now > deadline:
            seen["timed_out"] = True
            job.executors.terminate()
            return True
        return False

    job.run(until=finished, on_pass=on_pass, handle_signals=handle_signals)
    report(force=True)
    return RunOutcome(
        run_id=run_id,
        state=_run_state(job, dag.dag_id, run_id),  # after stop() recorded the last outcomes
        timed_out=seen["timed_out"],
        elapsed=time.monotonic() - started,
        dashboard_link=seen["link"],
    )


def next_progress(started: float, took: float, *, every: float) -> float:
    """When to count the run for its progress again, after a count that began at
    ``started`` and took ``took`` seconds: ``every`` seconds later, or later still for a
    run so large that counting it (every task instance is read) would otherwise take more
    than :data:`PROGRESS_SHARE` of the scheduler's time (18 ms at 100,000 task instances on
    SQLite: every 0.5 s still; at a million, every few seconds)."""
    return started + max(every, took / PROGRESS_SHARE)


def _run_state(job: SchedulerJob, dag_id: str, run_id: str) -> str | None:
    with job.store.session() as session:
        run = session.get(DagRun, (dag_id, run_id))
        return run.state if run is not None else None


def _counts(job: SchedulerJob, dag_id: str, run_id: str) -> Counter[str]:
    with job.store.session() as session:
        rows = session.execute(
            select(TaskInstance.state, func.count())
            .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            .group_by(TaskInstance.state)
        ).all()
    return Counter({state or "none": int(n) for state, n in rows})
