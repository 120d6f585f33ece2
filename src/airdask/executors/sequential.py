"""SequentialExecutor: one attempt at a time, inside the scheduler's heartbeat."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airdask import runner
from airdask.executors.base import BaseExecutor
from airdask.executors.common import (
    cleanup_by_revoking,
    local_spec,
    log_from_folder,
    report_outcome,
    report_started,
)
from airdask.executors.events import EventInfo
from airdask.runner import TaskSpec
from airdask.state import TaskInstanceKey

if TYPE_CHECKING:
    from airdask.commands import Command
    from airdask.config import Config
    from airdask.store.models import TaskInstance


class SequentialExecutor(BaseExecutor):
    """Runs queued attempts one after another in ``sync()``; parallelism is always 1.

    Good for SQLite set-ups and for tests: nothing runs outside the scheduler's own process
    except the commands themselves (a PythonCommand runs in the scheduler process).
    """

    is_local = True
    is_production = False
    capture_python_output = True

    def __init__(self, parallelism: int | None = None, *, config: Config | None = None) -> None:
        super().__init__(1, config=config)
        self.commands_to_run: list[tuple[TaskInstanceKey, TaskSpec]] = []
        self._current: TaskInstanceKey | None = None

    def execute_async(
        self,
        key: TaskInstanceKey,
        command: Command,
        queue: str | None = None,
        executor_config: Any | None = None,
    ) -> None:
        spec = local_spec(
            self, key, command, executor_config, capture_python_output=self.capture_python_output
        )
        self.commands_to_run.append((key, spec))

    def sync(self) -> None:
        while self.commands_to_run:
            key, spec = self.commands_to_run.pop(0)
            skip = self._skip_reason()
            if skip is not None:
                self.fail(key, EventInfo(skip, kind="killed"))
                continue
            self._current = key
            report_started(self, key)  # replaced by the outcome before anyone reads it
            try:
                outcome = self._run(spec)
            finally:
                self._current = None
            report_outcome(self, key, outcome)

    def _run(self, spec: TaskSpec) -> runner.Outcome:
        return runner.run_task(spec)

    def _skip_reason(self) -> str | None:
        """A reason not to run the next attempt (it is failed with it), or None."""
        return None

    def end(self) -> None:
        """Run everything queued, one at a time (parallelism 1 would leave all but one)."""
        while self.queued_tasks or self.commands_to_run:
            self.heartbeat()

    def terminate(self) -> None:
        runner.kill_all("terminated")
        for key, _ in self.commands_to_run:
            self.fail(key, EventInfo("terminated before it started", kind="killed"))
        self.commands_to_run.clear()

    def revoke_task(self, *, ti: TaskInstance) -> None:
        key = ti.key
        self.queued_tasks.pop(key, None)
        before = len(self.commands_to_run)
        self.commands_to_run = [(k, s) for k, s in self.commands_to_run if k != key]
        if len(self.commands_to_run) != before:
            self.running.discard(key)
        elif key == self._current:
            runner.kill_task(runner_key(key), "revoked")

    def cleanup_stuck_queued_tasks(self, tis: list[TaskInstance]) -> list[str]:
        return cleanup_by_revoking(self, tis)

    def get_task_log(self, ti: TaskInstance, try_number: int) -> tuple[list[str], list[str]]:
        return log_from_folder(self, ti, try_number)


def runner_key(key: TaskInstanceKey) -> str:
    from airdask.commands import dask_key

    return dask_key(key)
