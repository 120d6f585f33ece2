"""The executors a scheduler hosts, and which one a task instance goes to.

Airflow 2.10's multiple executors: ``[core] executor`` lists several (the first is the
default, see :mod:`airdask.executors.names`) and the scheduler runs all of them in its
process. :class:`ExecutorSet` is that list as the loop sees it:

* **Routing.** A task instance is queued on the executor its task names (``executor=``,
  else the default); the entry's id is written to the TI's ``executor`` column in the same
  commit as QUEUED. From then on that column decides: stuck-in-queued withdrawal and
  adoption ask only the executor named there (a TI with no executor recorded, queued before
  the column existed, belongs to the default one).
* **Slots.** ``[core] parallelism`` (0 = unlimited) is global: ``parallelism - Σ
  slots_occupied`` over every executor. Each executor's own ``parallelism`` limits only it
  (its ``slots_available``). A pass queues a TI only while both have room.
* **Lifecycle.** ``start``, ``heartbeat``, ``end`` and ``terminate`` go to each executor in
  order; the event buffers are merged into one batch, so every executor's events go through
  the same event processing. One executor failing to ``end()`` does not keep the others
  from ending.

A name a task gives that is not configured is caught when a run is created
(:func:`check_dag_executors`), when the scheduler starts a run, and when it queues a TI: the
run (or the TI) fails with a reason naming the configured executors; nothing waits forever.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence

from airdask.dag import DAG
from airdask.executors.arrivals import Arrivals
from airdask.executors.base import BaseExecutor, EventBufferValueType
from airdask.executors.names import ExecutorName, UnknownExecutorError, describe, resolve
from airdask.state import TaskInstanceKey
from airdask.store.models import TaskInstance

log = logging.getLogger(__name__)


def check_dag_executors(dag: DAG, names: Sequence[ExecutorName]) -> list[str]:
    """Problems with the executors ``dag``'s tasks name: one line per unknown name."""
    problems = []
    for task in dag.tasks:
        try:
            resolve(task.executor, names)
        except UnknownExecutorError as exc:
            problems.append(f"task {task.task_id!r} of DAG {dag.dag_id!r}: {exc}")
    return problems


class ExecutorSet:
    """The scheduler's executors, the default first.

    :param executors: (name, executor) pairs in ``[core] executor`` order.
    :param parallelism: ``[core] parallelism``, global across them (0 = unlimited).
    """

    def __init__(
        self, executors: Sequence[tuple[ExecutorName, BaseExecutor]], *, parallelism: int
    ) -> None:
        if not executors:
            raise ValueError("an ExecutorSet needs at least one executor")
        if parallelism < 0:
            raise ValueError(f"parallelism must be >= 0 (0 = unlimited), got {parallelism}")
        self.names = [name for name, _ in executors]
        self.by_id: dict[str, BaseExecutor] = {name.id: ex for name, ex in executors}
        if len(self.by_id) != len(executors):
            raise ValueError(f"executor ids must be unique: {describe(self.names)}")
        self.parallelism = parallelism
        #: One count of arrived outcomes for them all: the loop waits on it between passes.
        self.arrivals = Arrivals()
        for _, executor in executors:
            executor.arrivals = self.arrivals

    @classmethod
    def single(cls, executor: BaseExecutor, *, parallelism: int) -> ExecutorSet:
        """One executor (a caller that built it itself), named by its class."""
        module = type(executor).__module__
        name = ExecutorName(f"{module}.{type(executor).__name__}")
        return cls([(name, executor)], parallelism=parallelism)

    def __iter__(self) -> Iterator[BaseExecutor]:
        return iter(self.by_id.values())

    @property
    def default(self) -> BaseExecutor:
        return self.by_id[self.default_id]

    @property
    def default_id(self) -> str:
        return self.names[0].id

    @property
    def children(self) -> tuple[BaseExecutor, ...]:
        """The executors (duck-typed like LocalDaskExecutor's, for the dashboard)."""
        return tuple(self.by_id.values())

    def describe(self) -> str:
        return describe(self.names)

    def label(self) -> str:
        """``DaskExecutor,LocalExecutor,celery:CeleryExecutor``; one executor's class name."""
        return ",".join(str(name) for name in self.names)

    @property
    def dashboard_link(self) -> str | None:
        """The first Dask dashboard link any of them has (None: none has one)."""
        for executor in self:
            link = getattr(executor, "dashboard_link", None)
            if link:
                return str(link)
        return None

    @classmethod
    def of(cls, executor: BaseExecutor | ExecutorSet) -> ExecutorSet:
        """``executor`` as a set (one executor: a set of it, with no global limit)."""
        return (
            executor if isinstance(executor, ExecutorSet) else cls.single(executor, parallelism=0)
        )

    def __repr__(self) -> str:
        return f"<ExecutorSet {self.describe()}; parallelism={self.parallelism}>"

    # ---- routing -----------------------------------------------------------------------

    def id_for(self, requested: str | None) -> str:
        """The id of the executor a task's ``executor=`` names (None: the default).

        :raises UnknownExecutorError: naming the configured executors.
        """
        return resolve(requested, self.names).id

    def id_of_ti(self, ti: TaskInstance) -> str | None:
        """The id of the executor ``ti`` was queued on, or None when it is not configured
        here. Its ``executor`` column names it (none recorded: the default); a recorded name
        that is no id here but another spelling of one entry (the class name of an executor
        configured with an alias since) finds that entry."""
        recorded = ti.executor or self.default_id
        if recorded in self.by_id:
            return recorded
        try:
            return resolve(recorded, self.names).id
        except UnknownExecutorError:
            return None

    def of_ti(self, ti: TaskInstance) -> BaseExecutor | None:
        """The executor ``ti`` was queued on (see :meth:`id_of_ti`), or None."""
        executor_id = self.id_of_ti(ti)
        return None if executor_id is None else self.by_id[executor_id]

    def group(
        self, tis: Sequence[TaskInstance]
    ) -> tuple[dict[str, list[TaskInstance]], list[TaskInstance]]:
        """``tis`` by executor id, and those whose executor is not configured here."""
        groups: dict[str, list[TaskInstance]] = {}
        homeless: list[TaskInstance] = []
        for ti in tis:
            executor_id = self.id_of_ti(ti)
            if executor_id is None:
                homeless.append(ti)
            else:
                groups.setdefault(executor_id, []).append(ti)
        return groups, homeless

    def has_task(self, ti: TaskInstance) -> bool:
        executor = self.of_ti(ti)
        return executor is not None and executor.has_task(ti)

    # ---- slots -------------------------------------------------------------------------

    @property
    def slots_occupied(self) -> int:
        return sum(executor.slots_occupied for executor in self)

    @property
    def open_slots(self) -> int:
        """``[core] parallelism`` minus what every executor holds (``sys.maxsize`` when
        unlimited)."""
        if not self.parallelism:
            return sys.maxsize
        return max(self.parallelism - self.slots_occupied, 0)

    def slots_available(self) -> dict[str, int]:
        """Each executor's own open slots, by id."""
        return {id_: max(executor.slots_available, 0) for id_, executor in self.by_id.items()}

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start each executor; if one fails, those already started are terminated."""
        started: list[BaseExecutor] = []
        for executor in self:
            try:
                executor.start()
            except BaseException:
                for other in reversed(started):
                    try:
                        other.terminate()
                    except Exception as exc:  # the start error is the one to report
                        log.warning("could not terminate %s: %s", other, exc)
                raise
            started.append(executor)

    def heartbeat(self) -> None:
        """Heartbeat each executor; what arrives from now on counts for the next pass."""
        self.arrivals.take()
        for executor in self:
            executor.heartbeat()

    def get_event_buffer(
        self, dag_ids: Sequence[str] | None = None
    ) -> dict[TaskInstanceKey, EventBufferValueType]:
        """Every executor's events, in one batch (a key lives in one executor at a time)."""
        events: dict[TaskInstanceKey, EventBufferValueType] = {}
        for executor in self:
            events.update(executor.get_event_buffer(dag_ids))
        return events

    def end(self) -> None:
        """``end()`` each executor; one without it (or failing) is logged, and the others
        still end. Re-raises the first error other than NotImplementedError."""
        self._each("end")

    def terminate(self) -> None:
        self._each("terminate")

    def _each(self, method: str) -> None:
        first: BaseException | None = None
        for executor in self:
            try:
                getattr(executor, method)()
            except NotImplementedError:
                log.warning(
                    "%s has no %s(); attempts it still runs are not awaited", executor, method
                )
            except Exception as exc:
                log.error("%s.%s() failed: %s", type(executor).__name__, method, exc)
                first = first or exc
        if first is not None:
            raise first
