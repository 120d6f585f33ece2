"""A user's own executor, loaded in tests through ``[core] executor = my_executor.InlineExecutor``
(docs/executors.md shows the same class)."""

from __future__ import annotations

import subprocess
from typing import Any

from airdask.config import Config
from airdask.executors import BaseExecutor, EventInfo
from airdask.state import TaskInstanceKey


class InlineExecutor(BaseExecutor):
    """Runs argv commands one at a time inside sync()."""

    def __init__(self, parallelism: int | None = None, *, config: Config | None = None) -> None:
        super().__init__(parallelism, config=config)
        self.todo: list[tuple[TaskInstanceKey, list[str]]] = []

    def execute_async(
        self,
        key: TaskInstanceKey,
        command: Any,
        queue: str | None = None,
        executor_config: Any | None = None,
    ) -> None:
        self.todo.append((key, command))

    def sync(self) -> None:
        while self.todo:
            key, argv = self.todo.pop(0)
            self.running_state(key, EventInfo("started", kind="running"))
            code = subprocess.run(argv).returncode
            if code == 0:
                self.success(key, EventInfo("exit code 0"))
            else:
                self.fail(key, EventInfo(f"exit code {code}", kind="exit_code", exit_code=code))

    def end(self) -> None:
        self.sync()
