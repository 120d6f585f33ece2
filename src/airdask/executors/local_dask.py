"""LocalDaskExecutor: routes each attempt by queue, like Airflow's LocalKubernetesExecutor.

Attempts whose queue equals ``[local_dask_executor] local_queue`` (default ``local``) run on a
:class:`~airdask.executors.local.LocalExecutor`, everything else on a
:class:`~airdask.executors.dask.DaskExecutor`. The facade owns ``parallelism``, the queue
and the priority order (the base class's); the children run unlimited and their events are
moved into the facade's event buffer on every ``sync()``.

The newer way, Airflow 2.10's: list both executors, ``[core] executor =
DaskExecutor,LocalExecutor``, and give the local tasks ``executor="LocalExecutor"`` instead of
the local queue (docs/several-executors.md). Each then has its own ``parallelism`` and task
instances record which one ran them; this class stays for existing set-ups, as Airflow kept
LocalKubernetesExecutor for a while.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airdask.executors.arrivals import Arrivals
from airdask.executors.base import BaseExecutor, QueuedTaskInstanceType, TaskTuple
from airdask.executors.dask import DaskExecutor
from airdask.executors.local import LocalExecutor
from airdask.state import TaskInstanceKey, TaskInstanceState

if TYPE_CHECKING:
    import click

    from airdask.commands import Command
    from airdask.config import Config
    from airdask.store.models import TaskInstance

_PASSING = (TaskInstanceState.QUEUED, TaskInstanceState.RUNNING)


class LocalDaskExecutor(BaseExecutor):
    """A LocalExecutor for the local queue and a DaskExecutor for every other queue."""

    is_local = False

    def __init__(
        self,
        cluster_address: str | None = None,
        *,
        client: Any | None = None,
        security: Any | None = None,
        parallelism: int | None = None,
        worker_resources: Mapping[str, float] | None = None,
        config: Config | None = None,
    ) -> None:
        super().__init__(parallelism, config=config)
        self.local_queue = self.config.local_dask_executor.local_queue
        self.local_executor = LocalExecutor(0, config=self.config)
        self.dask_executor = DaskExecutor(
            cluster_address,
            client=client,
            security=security,
            parallelism=0,
            worker_resources=worker_resources,
            config=self.config,
        )

    @property
    def children(self) -> tuple[BaseExecutor, BaseExecutor]:
        return (self.local_executor, self.dask_executor)

    @property
    def arrivals(self) -> Arrivals:
        """The Dask side's counter: it is the side that learns of outcomes on its own."""
        return self.dask_executor.arrivals

    @arrivals.setter
    def arrivals(self, value: Arrivals) -> None:
        for child in self.children:
            child.arrivals = value

    def _child_for(self, queue: str | None) -> BaseExecutor:
        return self.local_executor if queue == self.local_queue else self.dask_executor

    def start(self) -> None:
        for child in self.children:
            child.start()

    def _before_process(self, entries: Mapping[TaskInstanceKey, QueuedTaskInstanceType]) -> None:
        self.dask_executor._before_process(entries)  # the Dask side asks Dask for priorities

    def _process_tasks(self, task_tuples: list[TaskTuple]) -> None:
        with self.dask_executor.batch():
            super()._process_tasks(task_tuples)
        self._move_events()

    def execute_async(
        self,
        key: TaskInstanceKey,
        command: Command,
        queue: str | None = None,
        executor_config: Any | None = None,
    ) -> None:
        child = self._child_for(queue)
        child.running.add(key)
        try:
            child.execute_async(
                key=key, command=command, queue=queue, executor_config=executor_config
            )
        except Exception:
            child.running.discard(key)
            raise

    def sync(self) -> None:
        for child in self.children:
            child.sync()
        self._move_events()

    def _move_events(self) -> None:
        for child in self.children:
            for key, (state, info) in child.get_event_buffer().items():
                if state is None:
                    continue
                self.change_state(key, state, info, remove_running=state not in _PASSING)

    def end(self) -> None:
        for child in self.children:
            child.end()
        self._move_events()

    def terminate(self) -> None:
        for child in self.children:
            child.terminate()
        self._move_events()

    def revoke_task(self, *, ti: TaskInstance) -> None:
        self.queued_tasks.pop(ti.key, None)
        self._child_for(ti.queue).revoke_task(ti=ti)
        self.running.discard(ti.key)

    def cleanup_stuck_queued_tasks(self, tis: list[TaskInstance]) -> list[str]:
        lines = []
        for ti in tis:
            self.queued_tasks.pop(ti.key, None)
            lines += self._child_for(ti.queue).cleanup_stuck_queued_tasks([ti])
            self.running.discard(ti.key)
        return lines

    def try_adopt_task_instances(self, tis: Sequence[TaskInstance]) -> Sequence[TaskInstance]:
        local = [ti for ti in tis if ti.queue == self.local_queue]
        remote = [ti for ti in tis if ti.queue != self.local_queue]
        not_adopted = list(self.dask_executor.try_adopt_task_instances(remote))
        left = {ti.key for ti in not_adopted}
        self.running.update(ti.key for ti in remote if ti.key not in left)
        return [*self.local_executor.try_adopt_task_instances(local), *not_adopted]

    def get_task_log(self, ti: TaskInstance, try_number: int) -> tuple[list[str], list[str]]:
        return self._child_for(ti.queue).get_task_log(ti, try_number)

    @staticmethod
    def get_cli_commands() -> list[click.Command]:
        return DaskExecutor.get_cli_commands()
