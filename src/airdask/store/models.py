"""SQLAlchemy 2 typed models of the metadata database.

The scheduler process is the only writer. ``TaskInstance`` can be built without a session
(for executor tests and notebooks) and exposes :attr:`TaskInstance.key`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from airdask.state import DEFAULT_POOL, DagRunState, TaskInstanceKey, TaskInstanceState


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: airdask stores UTC-aware datetimes")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


class DagRun(Base):
    __tablename__ = "dag_run"
    __table_args__ = (
        Index("ix_dag_run_state", "state"),
        Index("ix_dag_run_logical_date", "dag_id", "logical_date"),
    )

    dag_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    state: Mapped[str] = mapped_column(String(20), default=DagRunState.QUEUED.value)
    conf: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    dag_file: Mapped[str | None] = mapped_column(Text, default=None)
    queued_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    start_date: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    end_date: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    #: The scheduler job that drives this run (None: any scheduler may take it).
    scheduled_by_job_id: Mapped[int | None] = mapped_column(Integer, default=None)
    #: The date the run is "for" (Airflow's logical_date): the trigger time of a manual
    #: run; for a scheduled run, the start of its data interval.
    logical_date: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    data_interval_start: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    data_interval_end: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)


class DagModel(Base):
    """What the scheduler knows of a scheduled DAG between passes: whether it is paused and
    when its next run is due, so that a pass finds the due DAGs with one indexed query
    (:mod:`airdask.scheduler.schedules`)."""

    __tablename__ = "dag"
    __table_args__ = (Index("ix_dag_next_dagrun_create_after", "next_dagrun_create_after"),)

    dag_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    is_paused: Mapped[bool] = mapped_column(Boolean, default=False)
    fileloc: Mapped[str | None] = mapped_column(Text, default=None)
    #: The schedule as written (cron, preset, "every 1h", "None"), and the DAG's timezone.
    schedule: Mapped[str | None] = mapped_column(String(250), default=None)
    timezone: Mapped[str | None] = mapped_column(String(100), default=None)
    #: The next run: its logical date, data interval and when it may be created (None: no
    #: run to create, e.g. schedule=None or a "@once" DAG that ran).
    next_dagrun: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    next_dagrun_data_interval_start: Mapped[datetime | None] = mapped_column(
        UtcDateTime, default=None
    )
    next_dagrun_data_interval_end: Mapped[datetime | None] = mapped_column(
        UtcDateTime, default=None
    )
    next_dagrun_create_after: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    #: The data interval of the latest scheduled or backfilled run.
    last_data_interval_start: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    last_data_interval_end: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    updated_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, default=utcnow, onupdate=utcnow
    )


class TaskInstance(Base):
    __tablename__ = "task_instance"
    __table_args__ = (
        ForeignKeyConstraint(
            ["dag_id", "run_id"], ["dag_run.dag_id", "dag_run.run_id"], ondelete="CASCADE"
        ),
        # With ix_ti_ready (below), the only indexes of ``state``: every state change
        # rewrites an entry in each, several times per attempt (ADR 0017).
        Index("ix_ti_run_state", "dag_id", "run_id", "state"),
    )

    dag_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    map_index: Mapped[int] = mapped_column(Integer, primary_key=True, default=-1)
    try_number: Mapped[int] = mapped_column(Integer, default=0)
    max_tries: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str | None] = mapped_column(String(20), default=None)
    pool: Mapped[str] = mapped_column(String(256), default=DEFAULT_POOL)
    pool_slots: Mapped[int] = mapped_column(Integer, default=1)
    queue: Mapped[str | None] = mapped_column(String(256), default=None)
    priority_weight: Mapped[int] = mapped_column(Integer, default=1)
    executor_config: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    external_executor_id: Mapped[str | None] = mapped_column(String(512), default=None)
    #: The id of the executor the current try was queued on (its alias, else its class
    #: name: :mod:`airdask.executors.names`), written with QUEUED; None: never queued.
    executor: Mapped[str | None] = mapped_column(String(1000), default=None)
    queued_dttm: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    start_date: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    end_date: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    duration: Mapped[float | None] = mapped_column(Float, default=None)
    hostname: Mapped[str | None] = mapped_column(String(1000), default=None)
    queued_by_job_id: Mapped[int | None] = mapped_column(Integer, default=None)
    next_try_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    stuck_in_queued_count: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    updated_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, default=utcnow, onupdate=utcnow
    )

    def __init__(self, **kwargs: Any) -> None:
        # Column defaults apply at flush; a TI built without a session needs them now.
        defaults = {
            "map_index": -1,
            "try_number": 0,
            "max_tries": 0,
            "pool": DEFAULT_POOL,
            "pool_slots": 1,
            "priority_weight": 1,
            "stuck_in_queued_count": 0,
        }
        super().__init__(**{**defaults, **kwargs})

    @property
    def key(self) -> TaskInstanceKey:
        """The key of the current attempt (try_number as stored; 1 for a never-run TI)."""
        return TaskInstanceKey(
            self.dag_id, self.task_id, self.run_id, max(self.try_number, 1), self.map_index
        )

    @property
    def ti_state(self) -> TaskInstanceState | None:
        return TaskInstanceState(self.state) if self.state else None

    def __repr__(self) -> str:
        return f"<TaskInstance {self.key} state={self.state}>"


# The ready query's order (scheduler.ready): walked from its start for one state, a pass
# reads the rows it queues instead of sorting every scheduled task instance again. Its first
# column makes it the index of every other query by state too (pool usage, counts by state).
Index(
    "ix_ti_ready",
    TaskInstance.state,
    TaskInstance.priority_weight.desc(),
    TaskInstance.task_id,
    TaskInstance.map_index,
)


class TaskResultRow(Base):
    """A task instance's return value, as its worker encoded it (``runner.encode_result``):
    ``format`` "json" (UTF-8 JSON text) or "pickle" (cloudpickle). Written by the scheduler
    when the success is recorded; see :mod:`airdask.scheduler.results`."""

    __tablename__ = "task_result"
    __table_args__ = (
        ForeignKeyConstraint(
            ["dag_id", "run_id"], ["dag_run.dag_id", "dag_run.run_id"], ondelete="CASCADE"
        ),
    )

    dag_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    map_index: Mapped[int] = mapped_column(Integer, primary_key=True, default=-1)
    try_number: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(10))
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Pool(Base):
    __tablename__ = "slot_pool"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    slots: Mapped[int] = mapped_column(Integer, default=0)
    description: Mapped[str | None] = mapped_column(Text, default=None)


class Job(Base):
    """A scheduler job: one scheduler process, with its heartbeat."""

    __tablename__ = "job"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_type: Mapped[str] = mapped_column(String(30), default="SchedulerJob")
    state: Mapped[str] = mapped_column(String(20), default="running")
    hostname: Mapped[str | None] = mapped_column(String(500), default=None)
    pid: Mapped[int | None] = mapped_column(Integer, default=None)
    executor_class: Mapped[str | None] = mapped_column(String(500), default=None)
    start_date: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    end_date: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    latest_heartbeat: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Log(Base):
    """The event trail: state changes and their reasons, CLI actions, recoveries."""

    __tablename__ = "log"
    __table_args__ = (Index("ix_log_ti", "dag_id", "run_id", "task_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Not indexed: nothing reads the trail by time (the newest rows are the highest ids),
    # and each task instance writes rows here on its way (ADR 0017).
    dttm: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    event: Mapped[str] = mapped_column(String(60))
    dag_id: Mapped[str | None] = mapped_column(String(250), default=None)
    task_id: Mapped[str | None] = mapped_column(String(250), default=None)
    run_id: Mapped[str | None] = mapped_column(String(250), default=None)
    map_index: Mapped[int | None] = mapped_column(Integer, default=None)
    try_number: Mapped[int | None] = mapped_column(Integer, default=None)
    extra: Mapped[str | None] = mapped_column(Text, default=None)
