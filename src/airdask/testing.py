"""Helpers for testing an executor, airdask's own or yours: build task instances without a
database, and drive an executor until its attempts finish.

::

    from airdask.testing import drain, make_ti

    ex = MyExecutor(parallelism=2)
    ex.start()
    ti = make_ti("hello")
    ex.queue_command(ti, ["echo", "hi"])
    events = drain(ex, [ti.key], timeout=30)   # {key: (state, info)}
    ex.end()

:func:`drain` plays the scheduler's part (``heartbeat()``, then ``get_event_buffer()``) as
dramatiq's ``StubBroker.join`` does for a broker: no sleeping in the test, and a deadline
that names what never finished.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airdask.state import TaskInstanceKey, TaskInstanceState

if TYPE_CHECKING:
    from airdask.executors.base import BaseExecutor
    from airdask.store.models import TaskInstance

__all__ = ["TERMINAL", "DrainTimeout", "drain", "make_ti"]

#: The states that end an attempt.
TERMINAL = frozenset({TaskInstanceState.SUCCESS, TaskInstanceState.FAILED})
#: Seconds :func:`drain` waits between two heartbeats that brought nothing new.
POLL_SECONDS = 0.02


class DrainTimeout(AssertionError):
    """:func:`drain` reached its deadline; the message names the keys without an outcome."""


def make_ti(
    task_id: str,
    *,
    dag_id: str = "contract",
    run_id: str = "run1",
    try_number: int = 1,
    executor_config: dict[str, Any] | None = None,
    **kwargs: Any,
) -> TaskInstance:
    """A task instance as the scheduler hands one to ``queue_command``, not stored anywhere.

    :param task_id: the task's id; ``dag_id``, ``run_id`` and ``try_number`` complete the key.
    :param executor_config: what ``execute_async`` gets as ``executor_config`` (for example
        ``{"execution_timeout": 5}``).
    :param kwargs: other columns (``pool``, ``pool_slots``, ``queue``, ``priority_weight``).
    """
    from airdask.store.models import TaskInstance

    return TaskInstance(
        dag_id=dag_id,
        task_id=task_id,
        run_id=run_id,
        try_number=try_number,
        executor_config=executor_config,
        **kwargs,
    )


def drain(
    executor: BaseExecutor,
    keys: Iterable[TaskInstanceKey],
    *,
    timeout: float = 60,
    dag_ids: list[str] | None = None,
) -> dict[TaskInstanceKey, tuple[TaskInstanceState, Any]]:
    """Heartbeat ``executor`` until every key in ``keys`` has a terminal event; return those.

    Events that are not terminal (QUEUED, RUNNING) and those of other keys are taken from
    the buffer and dropped, as the scheduler would have taken them.

    :param timeout: seconds until :class:`DrainTimeout`.
    :param dag_ids: passed to ``get_event_buffer`` (events of other DAGs stay buffered).
    :raises DrainTimeout: some key had no terminal event within ``timeout`` seconds.
    """
    wanted = set(keys)
    done: dict[TaskInstanceKey, tuple[TaskInstanceState, Any]] = {}
    deadline = time.monotonic() + timeout
    while True:
        executor.heartbeat()
        for key, (state, info) in executor.get_event_buffer(dag_ids).items():
            if state in TERMINAL:
                done[key] = (state, info)
        if wanted <= set(done):
            return done
        if time.monotonic() > deadline:
            missing = sorted(map(str, wanted - set(done)))
            raise DrainTimeout(f"no terminal event within {timeout:g}s for {missing}")
        time.sleep(POLL_SECONDS)
