"""DebugExecutor: in-process and uncaptured, for stepping through a task. Deprecated."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from airdask import runner
from airdask.executors.sequential import SequentialExecutor
from airdask.runner import TaskSpec

if TYPE_CHECKING:
    from airdask.config import Config


class DebugExecutor(SequentialExecutor):
    """Like SequentialExecutor, but a PythonCommand's output reaches your terminal as well
    as its log, so ``breakpoint()`` and ``print`` work as in a plain script; with
    ``fail_fast`` the first failure fails every attempt still waiting.

    Deprecated, as Airflow's DebugExecutor is: use ``SequentialExecutor`` (or call the task's
    callable directly in a test).
    """

    capture_python_output = False

    def __init__(
        self,
        parallelism: int | None = None,
        *,
        config: Config | None = None,
        fail_fast: bool = False,
    ) -> None:
        warnings.warn(
            "DebugExecutor is deprecated: use SequentialExecutor to run tasks one at a time "
            "in the scheduler process, or call the task's callable directly to debug it",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(parallelism, config=config)
        self.fail_fast = fail_fast
        self._failed = False

    def _run(self, spec: TaskSpec) -> runner.Outcome:
        outcome = runner.run_task(spec)
        self._failed = self._failed or outcome["state"] != "success"
        return outcome

    def _skip_reason(self) -> str | None:
        if self.fail_fast and self._failed:
            return "not run: fail_fast after an earlier failure"
        return None
