"""A user's own executor, loaded in tests through ``[core] executor = my_executor.InlineExecutor``
(docs/executors.md shows the same class)."""

from __future__ import annotations

import subprocess
from typing import Any

from airdask.executors import BaseExecutor
from airdask.state import TaskInstanceKey


class InlineExecutor(BaseExecutor):
    """Runs argv commands one at a time inside sync()."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
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
            ok = subprocess.run(argv).returncode == 0
            (self.success if ok else self.fail)(key, "exit code 0" if ok else "failed")

    def end(self) -> None:
        self.sync()
