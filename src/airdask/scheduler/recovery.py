"""Recovery, as in Airflow: dead scheduler jobs, orphaned task instances, stuck in queued.

* :func:`adopt_or_reset_orphans` — scheduler jobs whose heartbeat is older than
  ``[scheduler] scheduler_health_check_threshold`` are declared dead (:func:`.jobs.mark_dead`)
  and the runs they owned are released to any scheduler. Their QUEUED/RUNNING task
  instances are locked (``SKIP LOCKED``: two survivors never take the same one), offered to
  ``executor.try_adopt_task_instances``, and the ones it returns are reset (state none) to be
  scheduled again. A reset is not the task's fault, so it gets one more try (``max_tries +
  1``). If adoption itself fails, nothing is reset: what the executor could not look at may
  still be running, so those task instances are left as they are for the next check.
  With several executors (:mod:`.executors`), each orphan is offered to the executor its
  ``executor`` column names, and only to it; one executor failing to adopt defers only its
  own. An orphan whose executor is not configured in this scheduler cannot be asked: it is
  reset, with a reason naming that executor (every scheduler of a database is meant to
  share one ``[core] executor``).
* :func:`handle_stuck_queued` — task instances QUEUED by this job for longer than
  ``[scheduler] task_queued_timeout`` are withdrawn from the executor
  (``cleanup_stuck_queued_tasks``, else ``revoke_task`` one by one) and scheduled again, up
  to ``num_stuck_in_queued_retries`` times; then they fail with a reason saying so. A task
  instance whose withdrawal failed is left QUEUED (its attempt may still start) with a Log
  row saying why, and tried again at the next check. An executor that supports neither
  method cannot withdraw anything: its task instances are rescheduled, as in Airflow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from airdask.executors.base import BaseExecutor, NotSupportedError
from airdask.scheduler.claims import run_scope
from airdask.scheduler.events import add_ti_log, set_state
from airdask.scheduler.executors import ExecutorSet
from airdask.scheduler.jobs import mark_dead
from airdask.state import LIVE_VALUES, DagRunState, TaskInstanceKey, TaskInstanceState
from airdask.store.models import DagRun, Job, Log, TaskInstance, utcnow

log = logging.getLogger(__name__)
S = TaskInstanceState
_OPEN_RUNS = (DagRunState.QUEUED.value, DagRunState.RUNNING.value)


@dataclass
class RecoveryReport:
    dead_jobs: list[int] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    #: The attempts adopted, with the job each was adopted from.
    adopted_keys: list[tuple[TaskInstanceKey, int | None]] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)
    #: Left as they were: adoption failed, or a stuck attempt could not be withdrawn.
    deferred: list[str] = field(default_factory=list)
    rescheduled: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    runs: set[tuple[str, str]] = field(default_factory=set)


def release_runs_of_dead_jobs(session: Session) -> int:
    """Runs owned by a job that is no longer running go back to any scheduler."""
    alive = select(Job.id).where(Job.state == "running")
    result = session.execute(
        update(DagRun)
        .where(
            DagRun.state.in_(_OPEN_RUNS),
            DagRun.scheduled_by_job_id.is_not(None),
            DagRun.scheduled_by_job_id.not_in(alive),
        )
        .values(scheduled_by_job_id=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def lock_orphans(session: Session, scope: ColumnElement[bool]) -> list[TaskInstance]:
    """Live task instances of running runs in ``scope`` whose job is not running, locked for
    this transaction; those another scheduler is recovering are skipped."""
    alive = select(Job.id).where(Job.state == "running")
    stmt = (
        select(TaskInstance)
        .join(
            DagRun,
            (DagRun.dag_id == TaskInstance.dag_id) & (DagRun.run_id == TaskInstance.run_id),
        )
        .where(
            TaskInstance.state.in_(LIVE_VALUES),
            or_(
                TaskInstance.queued_by_job_id.is_(None),
                TaskInstance.queued_by_job_id.not_in(alive),
            ),
            DagRun.state == DagRunState.RUNNING.value,
            scope,
        )
        .order_by(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id)
        .with_for_update(of=TaskInstance, skip_locked=True, key_share=True)
    )
    return list(session.scalars(stmt))


def adopt_or_reset_orphans(
    session: Session,
    executor: BaseExecutor | ExecutorSet,
    *,
    job_id: int,
    threshold: float,
    scope: ColumnElement[bool] | None = None,
    declare_dead: bool = True,
    now: datetime | None = None,
) -> RecoveryReport:
    """See the module docstring. ``scope`` limits the runs whose orphans this job takes
    (:func:`.claims.run_scope`; default: an unfiltered scheduler's); ``declare_dead=False``
    skips declaring jobs dead (right after this scheduler lost the database itself: the
    others could not heartbeat either)."""
    now = now or utcnow()
    if scope is None:
        scope = run_scope(job_id, None)
    report = RecoveryReport()
    if declare_dead:
        dead = mark_dead(session, job_id=job_id, threshold=threshold, now=now)
        report.dead_jobs = [job.id for job in dead]
        for job in dead:
            log.warning(
                "scheduler job %d (pid %s on %s) declared dead: no heartbeat for %.1fs",
                job.id,
                job.pid,
                job.hostname,
                (now - job.latest_heartbeat).total_seconds(),
            )
    release_runs_of_dead_jobs(session)
    orphans = lock_orphans(session, scope)
    if not orphans:
        return report
    executors = ExecutorSet.of(executor)
    groups, homeless = executors.group(orphans)
    not_adopted: list[TaskInstance] = list(homeless)
    deferred: set[int] = set()
    for executor_id, tis in groups.items():
        try:
            not_adopted += executors.by_id[executor_id].try_adopt_task_instances(tis)
        except Exception as exc:  # what it could not look at may still run: touch nothing
            why = f"{executor_id}.try_adopt_task_instances failed: {type(exc).__name__}: {exc}"
            log.error("%s; %d orphaned task instances left for the next check", why, len(tis))
            session.add(Log(event="adopt_failed", extra=f"{why}; {len(tis)} left as they were"))
            report.deferred += [str(ti.key) for ti in tis]
            deferred.update(id(ti) for ti in tis)
    # No database I/O from here on: if the commit fails, the caller still gets the report
    # and knows what the executor took over (see :class:`.held.Held`).
    left = {id(ti) for ti in not_adopted}
    unknown = {id(ti) for ti in homeless}
    for ti in orphans:
        if id(ti) in deferred:
            continue
        if id(ti) not in left:
            old = ti.queued_by_job_id
            ti.queued_by_job_id = job_id
            report.adopted.append(str(ti.key))
            report.adopted_keys.append((ti.key, old))
            add_ti_log(session, ti, "adopted", f"from scheduler job {old} by job {job_id}")
            continue
        why = f"reset: its scheduler job {ti.queued_by_job_id} died while it was live"
        if id(ti) in unknown:
            why += (
                f"; its executor {ti.executor!r} is not configured here, so it could not be "
                f"asked to adopt it (configured: {executors.describe()})"
            )
        add_ti_log(
            session, ti, "orphan_reset", f"was {ti.state} (job {ti.queued_by_job_id}); {why}"
        )
        set_state(ti, None)
        ti.max_tries += 1
        ti.queued_dttm = None
        ti.external_executor_id = None
        ti.reason = why
        report.reset.append(str(ti.key))
        report.runs.add((ti.dag_id, ti.run_id))
    log.warning(
        "orphaned task instances: %d adopted, %d reset", len(report.adopted), len(report.reset)
    )
    return report


def handle_stuck_queued(
    session: Session,
    executor: BaseExecutor | ExecutorSet,
    *,
    job_id: int,
    timeout: float,
    max_reschedules: int,
    now: datetime | None = None,
) -> RecoveryReport:
    """Withdraw and reschedule (or finally fail) TIs stuck in QUEUED; see the module docs."""
    now = now or utcnow()
    report = RecoveryReport()
    limit = now - timedelta(seconds=timeout)
    stuck = list(
        session.scalars(
            select(TaskInstance)
            .where(
                TaskInstance.state == S.QUEUED.value,
                TaskInstance.queued_by_job_id == job_id,
                TaskInstance.queued_dttm < limit,
            )
            # Skipped if another scheduler is adopting them (it declared this one dead).
            .with_for_update(skip_locked=True, key_share=True)
        )
    )
    if not stuck:
        return report
    executors = ExecutorSet.of(executor)
    groups, _ = executors.group(stuck)  # one not ours here has nothing to withdraw from
    kept: dict[int, str] = {}
    for executor_id, tis in groups.items():
        kept.update(withdraw(executors.by_id[executor_id], tis))
    for ti in stuck:
        # Naming the queue says where to look: a queue no worker consumes is the usual cause.
        where = f" in queue {ti.queue!r}" if ti.queue else ""
        what = f"stuck in queued{where} for more than {timeout:g}s"
        problem = kept.get(id(ti))
        if problem is not None:
            extra = f"{what}; not rescheduled: {problem}; trying again at the next check"
            add_ti_log(session, ti, "stuck_in_queued_kept", extra)
            report.deferred.append(str(ti.key))
            continue
        ti.stuck_in_queued_count += 1
        report.runs.add((ti.dag_id, ti.run_id))
        if ti.stuck_in_queued_count > max_reschedules:
            set_state(ti, S.FAILED)
            ti.end_date = now
            ti.reason = f"{what}, {ti.stuck_in_queued_count} times; giving up"
            report.failed.append(str(ti.key))
            add_ti_log(session, ti, "stuck_in_queued_failed", ti.reason)
        else:
            set_state(ti, S.SCHEDULED)
            ti.max_tries += 1
            ti.queued_dttm = None
            ti.external_executor_id = None
            ti.reason = f"{what}: revoked and rescheduled ({ti.stuck_in_queued_count})"
            report.rescheduled.append(str(ti.key))
            add_ti_log(session, ti, "stuck_in_queued_rescheduled", ti.reason)
    if report.deferred:
        log.warning("%d stuck task instances could not be withdrawn", len(report.deferred))
    return report


def withdraw(executor: BaseExecutor, tis: list[TaskInstance]) -> dict[int, str]:
    """Withdraw ``tis`` from the executor; return ``{id(ti): why}`` for those that may still
    run (empty when all were withdrawn, or the executor cannot withdraw anything).

    ``cleanup_stuck_queued_tasks`` returning means all were withdrawn. If it raises, each is
    tried with ``revoke_task`` (withdrawing twice is harmless), so one bad attempt does not
    keep the others queued."""
    cleanup_error: str | None = None
    try:
        for line in executor.cleanup_stuck_queued_tasks(tis):
            log.info("%s", line)
        return {}
    except NotSupportedError:
        pass
    except Exception as exc:  # the executor's problem must not stop the loop
        cleanup_error = f"cleanup_stuck_queued_tasks failed ({type(exc).__name__}: {exc})"
        log.error("%s; revoking one at a time", cleanup_error)
    kept: dict[int, str] = {}
    for ti in tis:
        problem = _revoke(executor, ti, cleanup_error)
        if problem is not None:
            kept[id(ti)] = problem
    return kept


def _revoke(executor: BaseExecutor, ti: TaskInstance, cleanup_error: str | None) -> str | None:
    try:
        executor.revoke_task(ti=ti)
    except NotSupportedError:
        # Neither method exists: nothing can be withdrawn, so nothing is waited for. After a
        # failed cleanup, though, the attempt is in an unknown state: keep it queued.
        return cleanup_error
    except Exception as exc:
        return f"revoking it failed ({type(exc).__name__}: {exc})"
    return None


def requeue_unsent(
    session: Session, executor: BaseExecutor | ExecutorSet, *, job_id: int | None
) -> set[tuple[str, str]]:
    """After a database outage: a task instance this job marked QUEUED that its executor
    does not have was never handed over (the commit went through, its answer was lost), so
    it is scheduled again with the same try. Returns the runs touched."""
    runs: set[tuple[str, str]] = set()
    queued = session.scalars(
        select(TaskInstance)
        .where(TaskInstance.state == S.QUEUED.value, TaskInstance.queued_by_job_id == job_id)
        .with_for_update(skip_locked=True, key_share=True)
    ).all()
    for ti in queued:
        if executor.has_task(ti):
            continue
        reason = "queued, but never handed to the executor (database outage)"
        add_ti_log(session, ti, "requeued_unsent", reason)
        set_state(ti, S.SCHEDULED)
        ti.try_number -= 1  # this try never started
        ti.queued_dttm = None
        ti.reason = f"{reason}: scheduled again"
        runs.add((ti.dag_id, ti.run_id))
    return runs
