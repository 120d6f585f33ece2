"""Scheduler jobs: the Job row of each scheduler process, its heartbeat, and who is dead.

Two kinds of job (``job.job_type``):

* ``SchedulerJob`` — ``airdask scheduler``: works on every run not owned by a live job.
* ``RunJob`` — ``airdask run`` and :func:`airdask.api.run_dag`: works on its own runs only.

Several ``SchedulerJob``\\ s may share one PostgreSQL database (:mod:`.claims`). SQLite has
no row locks, so on SQLite a scheduler refuses to start beside *another scheduler*, which is
precisely: a ``SchedulerJob`` row in state ``running`` whose ``latest_heartbeat`` is younger
than ``[scheduler] scheduler_health_check_threshold`` and, when it names this host, whose
process still exists. A ``running`` row with an older heartbeat, or of a process of this
host that is gone, is a scheduler that died without saying so (it does not count: the new
scheduler declares it dead and recovers its work), and ``RunJob``\\ s never count (each
owns its runs, so they can share a SQLite file with a scheduler). The check and the claim of the
kind happen in one transaction under SQLite's write lock and count only schedulers
registered before this one, so of two schedulers starting at the same moment exactly one
(the first registered) goes on.

Heartbeats and deaths are single UPDATE statements: a scheduler is declared dead only by the
statement that still finds its heartbeat stale, exactly once, and a scheduler learns it was
declared dead when its own heartbeat finds its row no longer running.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from airdask.store.models import Job, Log, utcnow

SCHEDULER = "SchedulerJob"
RUN = "RunJob"


class SchedulerConflict(RuntimeError):
    """Another scheduler already works on this SQLite database."""


@dataclass(frozen=True)
class DeadJob:
    id: int
    pid: int | None
    hostname: str | None
    latest_heartbeat: datetime


def register(session: Session, *, kind: str, executor_class: str) -> int:
    """Add a running Job row for this process; return its id."""
    job = Job(
        job_type=kind,
        state="running",
        hostname=socket.gethostname(),
        pid=os.getpid(),
        executor_class=executor_class,
    )
    session.add(job)
    session.flush()
    return job.id


def live_schedulers(
    session: Session, *, threshold: float, now: datetime | None = None, before: int | None = None
) -> list[Job]:
    """Other schedulers alive (see the module docs), registered before job ``before`` if
    given."""
    fresh = (now or utcnow()) - timedelta(seconds=threshold)
    stmt = select(Job).where(
        Job.job_type == SCHEDULER, Job.state == "running", Job.latest_heartbeat >= fresh
    )
    if before is not None:
        stmt = stmt.where(Job.id < before)
    return [job for job in session.scalars(stmt.order_by(Job.id)) if not _gone(job)]


def _gone(job: Job) -> bool:
    """Whether ``job``'s process is known to have ended (only knowable on this host)."""
    if job.hostname != socket.gethostname() or not job.pid:
        return False
    try:
        os.kill(job.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process: it exists
        return False
    try:  # a zombie (killed, not yet reaped) is gone too
        stat = Path(f"/proc/{job.pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


def sqlite_refusal(job: Job, *, now: datetime | None = None) -> str:
    """The one-line error for a second scheduler on SQLite."""
    age = ((now or utcnow()) - job.latest_heartbeat).total_seconds()
    return (
        f"another scheduler is running on this SQLite database (job {job.id}, pid {job.pid} "
        f"on {job.hostname}, heartbeat {max(age, 0):.1f}s ago): SQLite cannot be shared by "
        "several schedulers; use PostgreSQL ([database] sql_alchemy_conn = "
        "postgresql+psycopg://...) to run more than one"
    )


def claim_kind(session: Session, job_id: int, *, kind: str, threshold: float) -> None:
    """Record this job's kind; on SQLite refuse a second scheduler (see the module docs).

    :raises SchedulerConflict: with :func:`sqlite_refusal`'s message.
    """
    # The UPDATE first: on SQLite it takes the write lock, so the check below and a rival's
    # are serialised.
    session.execute(update(Job).where(Job.id == job_id).values(job_type=kind))
    if kind != SCHEDULER or session.get_bind().dialect.name != "sqlite":
        return
    others = live_schedulers(session, threshold=threshold, before=job_id)
    if others:
        raise SchedulerConflict(sqlite_refusal(others[0]))


def heartbeat(session: Session, job_id: int, *, now: datetime | None = None) -> bool:
    """Refresh the job's heartbeat; False if another scheduler declared it dead."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == "running")
        .values(latest_heartbeat=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def mark_dead(
    session: Session, *, job_id: int, threshold: float, now: datetime | None = None
) -> list[DeadJob]:
    """Declare running jobs (other than ``job_id``) whose heartbeat is older than
    ``threshold`` seconds failed, with a ``job_dead`` Log row each; return them."""
    now = now or utcnow()
    limit = now - timedelta(seconds=threshold)
    rows = session.execute(
        update(Job)
        .where(Job.state == "running", Job.latest_heartbeat < limit, Job.id != job_id)
        .values(state="failed", end_date=now)
        .returning(Job.id, Job.pid, Job.hostname, Job.latest_heartbeat)
        .execution_options(synchronize_session=False)
    ).all()
    dead = [DeadJob(*row) for row in rows]
    for job in dead:
        session.add(
            Log(
                event="job_dead",
                extra=f"scheduler job {job.id} (pid {job.pid} on {job.hostname}): no heartbeat "
                f"since {job.latest_heartbeat.isoformat()}; declared dead by job {job_id}",
            )
        )
    return dead
