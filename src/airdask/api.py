"""Running a DAG from Python (a notebook, a script): :func:`run_dag` and its result.

``run_dag`` is ``airdask run`` without the command line: it creates the schema if needed,
triggers one run, drives the scheduler's own :class:`~airdask.scheduler.loop.SchedulerJob`
until the run finishes (in this process, with the executor inside it) and returns a
:class:`DagRunResult` that reads the task instances back from the database.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from airdask.config import Config, load_config
from airdask.dag import DAG
from airdask.display import dag_run_html, table_html
from airdask.executors import BaseExecutor
from airdask.executors.loader import load_executors
from airdask.logs import read_log
from airdask.scheduler.executors import ExecutorSet
from airdask.scheduler.loop import SchedulerJob
from airdask.scheduler.results import decode, run_results
from airdask.scheduler.single_run import drive_run
from airdask.state import DagRunState, TaskInstanceKey
from airdask.store import DagRun, Pool, Store, TaskInstance, init_db
from airdask.store.queries import pool_resources


@dataclass(frozen=True)
class TaskResult:
    """One task instance of a run, as the scheduler recorded it."""

    task_id: str
    state: str | None
    try_number: int
    duration: float | None
    start_date: datetime | None
    end_date: datetime | None
    hostname: str | None
    pool: str
    external_executor_id: str | None
    reason: str | None
    map_index: int = -1
    #: The executor its last try was queued on (``[core] executor`` may list several).
    executor: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class DagRunResult:
    """What a run did: its state and every task instance (read from the metadata DB).

    ``timed_out`` is True when :func:`run_dag` gave up waiting: the executor was terminated
    and ``state`` is whatever the run had reached.
    """

    dag_id: str
    run_id: str
    state: str | None
    tasks: list[TaskResult]
    pools: list[tuple[str, int, int]]
    executor: str = ""
    dashboard_link: str | None = None
    elapsed: float | None = None
    timed_out: bool = False
    base_log_folder: str = ""
    _by_id: dict[str, TaskResult] = field(default_factory=dict, repr=False)
    #: (task_id, map_index) -> (format, data) of each kept return value
    _results: dict[tuple[str, int], tuple[str, bytes]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {t.task_id: t for t in self.tasks if t.map_index < 0}

    @property
    def succeeded(self) -> bool:
        return self.state == DagRunState.SUCCESS.value

    @property
    def counts(self) -> dict[str, int]:
        """Task instances by state (``none`` for those never scheduled)."""
        out: dict[str, int] = {}
        for task in self.tasks:
            name = task.state or "none"
            out[name] = out.get(name, 0) + 1
        return out

    def __getitem__(self, task_id: str) -> TaskResult:
        try:
            return self._by_id[task_id]
        except KeyError:
            if self.mapped(task_id):
                raise KeyError(
                    f"task {task_id!r} is mapped in run {self.run_id}: use "
                    f"result.mapped({task_id!r})"
                ) from None
            raise KeyError(f"run {self.run_id} has no task {task_id!r}") from None

    def mapped(self, task_id: str) -> list[TaskResult]:
        """The instances of a mapped task, by ``map_index`` (empty for a task not mapped)."""
        found = [t for t in self.tasks if t.task_id == task_id and t.map_index >= 0]
        return sorted(found, key=lambda t: t.map_index)

    def value(self, task_id: str, map_index: int | None = None) -> Any:
        """The return value ``task_id`` kept (a PythonTask's), as a downstream task gets
        it: for a mapped task, the list of its instances' values (``map_index`` picks one).

        :raises LookupError: the task kept no value (not a PythonTask, or not succeeded).
        """
        if map_index is None:
            mapped = sorted(t.map_index for t in self.tasks if t.task_id == task_id)
            if mapped and mapped[0] >= 0:
                return [self.value(task_id, i) for i in mapped]
            self[task_id]  # KeyError naming the task when the run has no such task
        index = -1 if map_index is None else map_index
        found = self._results.get((task_id, index))
        if found is None:
            state = next(
                (t.state for t in self.tasks if (t.task_id, t.map_index) == (task_id, index)),
                None,
            )
            raise LookupError(
                f"task {task_id!r} of run {self.run_id} kept no return value "
                f"(state {state or 'none'}; only a PythonTask's is kept)"
            )
        return decode(*found)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per task instance (e.g. for ``pandas.DataFrame(result.rows())``)."""
        return [t.as_dict() for t in self.tasks]

    def log(self, task_id: str, try_number: int | None = None, *, map_index: int = -1) -> str:
        """The log of one attempt (the last one by default) from ``[logging] base_log_folder``;
        ``map_index`` names the instance of a mapped task."""
        if map_index >= 0:
            by_index = {t.map_index: t for t in self.mapped(task_id)}
            if map_index not in by_index:
                raise KeyError(f"task {task_id!r} has no mapped instance {map_index}")
            task = by_index[map_index]
        else:
            task = self[task_id]
        key = TaskInstanceKey(
            self.dag_id, task_id, self.run_id, try_number or max(task.try_number, 1), map_index
        )
        messages, lines = read_log(self.base_log_folder, key)
        return "\n".join(lines) if lines else "\n".join(messages)

    @classmethod
    def load(cls, store: Store, dag_id: str, run_id: str, **extra: Any) -> DagRunResult:
        """The result of any run in the database (e.g. one the ``airdask scheduler`` ran)."""
        with store.session() as session:
            run = session.get(DagRun, (dag_id, run_id))
            if run is None:
                raise LookupError(f"no run {run_id!r} of DAG {dag_id!r}")
            tis = session.scalars(
                select(TaskInstance)
                .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
                .order_by(
                    TaskInstance.start_date.is_(None),
                    TaskInstance.start_date,
                    TaskInstance.task_id,
                    TaskInstance.map_index,
                )
            ).all()
            used = dict(
                session.execute(
                    select(TaskInstance.pool, func.count())
                    .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
                    .group_by(TaskInstance.pool)
                ).all()
            )
            slots = dict(session.execute(select(Pool.name, Pool.slots)).all())
            extra.setdefault("_results", run_results(session, dag_id, run_id))
            tasks = [
                TaskResult(
                    task_id=ti.task_id,
                    state=ti.state,
                    try_number=ti.try_number,
                    duration=ti.duration,
                    start_date=ti.start_date,
                    end_date=ti.end_date,
                    hostname=ti.hostname,
                    pool=ti.pool,
                    external_executor_id=ti.external_executor_id,
                    reason=ti.reason,
                    map_index=ti.map_index,
                    executor=ti.executor,
                )
                for ti in tis
            ]
            state = run.state
        pools = [(name, int(slots.get(name, 0)), int(n)) for name, n in sorted(used.items())]
        return cls(dag_id, run_id, state, tasks, pools, **extra)

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        return f"<DagRunResult {self.dag_id} {self.run_id} state={self.state} ({counts})>"

    def _repr_html_(self) -> str:
        """The run's state, counts by state, dashboard link, one row per task instance and
        the pools its tasks used."""
        timing = "" if self.elapsed is None else f" in {self.elapsed:.2f} s"
        pools = table_html(["pool", "slots", "task instances of this run"], self.pools)
        return (
            dag_run_html(
                dag_id=self.dag_id,
                run_id=self.run_id,
                state=self.state,
                tasks=[t.as_dict() for t in self.tasks],
                dashboard_link=self.dashboard_link,
            )
            + f"<div>executor: {html.escape(self.executor)}{timing}"
            + (" <b>(timed out)</b>" if self.timed_out else "")
            + f"</div>{pools}"
        )


def run_dag(
    dag: DAG,
    *,
    executor: BaseExecutor | str | None = None,
    conf: dict[str, Any] | None = None,
    timeout: float | None = None,
    config: Config | None = None,
) -> DagRunResult:
    """Trigger one run of ``dag`` and schedule it to its end in this process.

    :param executor: an executor (started here if needed, ended when the run finishes — a
        DaskExecutor given ``client=`` leaves that client open), executor names as
        ``[core] executor`` lists them (several: each task runs on the one it names), or
        None for ``[core] executor``.
    :param conf: the run's ``conf``.
    :param timeout: seconds to wait for the run; then the executor is terminated (its
        attempts are killed and recorded as such) and the result has ``timed_out=True``.
    :param config: settings; None loads them now (``AIRDASK_HOME``, ``AIRDASK__*``).
    :raises airdask.scheduler.runs.RunError: the DAG asks for unknown or too small pools.

    Interrupting the kernel (SIGINT) stops the loop after the current pass; the run is then
    left to ``airdask scheduler``.
    """
    config = config if config is not None else load_config()
    store = Store.from_config(config)
    try:
        init_db(store, default_pool_slots=config.core.default_pool_slots)
        if executor is None or isinstance(executor, str):
            with store.session() as session:
                resources = pool_resources(session)
            built = load_executors(executor, config=config, worker_resources=resources)
            parallelism = config.core.parallelism
            job_executor: BaseExecutor | ExecutorSet = ExecutorSet(built, parallelism=parallelism)
        else:
            job_executor = executor
        job = SchedulerJob(
            store=store, executor=job_executor, config=config, dags={dag.dag_id: dag}
        )
        outcome = drive_run(job, dag, conf=conf, timeout=timeout)
        return DagRunResult.load(
            store,
            dag.dag_id,
            outcome.run_id,
            executor=job.executors.label(),
            dashboard_link=outcome.dashboard_link,
            elapsed=outcome.elapsed,
            timed_out=outcome.timed_out,
            base_log_folder=config.logging.base_log_folder,
        )
    finally:
        store.dispose()
