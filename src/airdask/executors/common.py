"""Pieces the built-in executors share: timeouts, specs, outcome reporting, log reading,
draining a queue filled by another thread."""

from __future__ import annotations

import queue
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from airdask.commands import Command, build_spec
from airdask.durations import to_seconds
from airdask.executors.events import EventInfo, info_from_outcome, timestamp
from airdask.logs import read_log
from airdask.runner import Outcome, TaskSpec
from airdask.state import TaskInstanceKey

if TYPE_CHECKING:
    from airdask.executors.base import BaseExecutor
    from airdask.store.models import TaskInstance

T = TypeVar("T")


def execution_timeout(executor_config: Any) -> float | None:
    """``executor_config["execution_timeout"]`` (seconds or timedelta) as float seconds."""
    if not isinstance(executor_config, Mapping):
        return None
    value = executor_config.get("execution_timeout")
    seconds = to_seconds(value)
    if seconds is None:
        return None
    if seconds <= 0:
        raise ValueError(f"execution_timeout must be positive, got {value!r}")
    return seconds


def local_spec(
    executor: BaseExecutor,
    key: TaskInstanceKey,
    command: Command,
    executor_config: Any,
    *,
    capture_python_output: bool = True,
) -> TaskSpec:
    """A spec whose log goes straight to ``[logging] base_log_folder`` (same machine)."""
    return build_spec(
        key,
        command,
        log_root=executor.config.logging.base_log_folder,
        return_log=False,
        timeout=execution_timeout(executor_config),
        capture_python_output=capture_python_output,
    )


def report_outcome(executor: BaseExecutor, key: TaskInstanceKey, outcome: Outcome) -> None:
    info = info_from_outcome(outcome)
    if outcome["state"] == "success":
        executor.success(key, info)
    else:
        executor.fail(key, info)


def log_from_folder(
    executor: BaseExecutor, ti: TaskInstance, try_number: int
) -> tuple[list[str], list[str]]:
    key = ti.key.with_try_number(try_number)
    return read_log(executor.config.logging.base_log_folder, key)


def cleanup_by_revoking(executor: BaseExecutor, tis: list[TaskInstance]) -> list[str]:
    """``cleanup_stuck_queued_tasks`` for executors whose ``revoke_task`` is exact."""
    lines = []
    for ti in tis:
        executor.revoke_task(ti=ti)
        lines.append(f"{ti.key}: revoked after being stuck in queued")
    return lines


def drain_queue(source: queue.SimpleQueue[T]) -> list[T]:
    """Everything in ``source`` now, without waiting."""
    items: list[T] = []
    while True:
        try:
            items.append(source.get_nowait())
        except queue.Empty:
            return items


def report_started(executor: BaseExecutor, key: TaskInstanceKey) -> None:
    """Report that ``key`` started on this machine now (what a local executor says when it
    hands an attempt to its process; without it the task instance would stay QUEUED until
    its outcome, and look stuck after ``task_queued_timeout``)."""
    import socket
    import time

    executor.running_state(
        key,
        EventInfo(
            "started",
            kind="running",
            hostname=socket.gethostname(),
            started_at=timestamp(time.time()),
        ),
    )
