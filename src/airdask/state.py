"""Task instance identity, states and the allowed state transitions.

Pure data and functions: this module imports nothing of airdask and does no I/O, so the
scheduler, the executors and the tests can all reason about states without a database.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

#: The pool every task is in unless it names another (Airflow's ``default_pool``).
DEFAULT_POOL = "default_pool"


class TaskInstanceKey(NamedTuple):
    """Identifies one attempt of one task instance (Airflow's ``TaskInstanceKey``)."""

    dag_id: str
    task_id: str
    run_id: str
    try_number: int = 1
    map_index: int = -1

    @property
    def primary(self) -> tuple[str, str, str, int]:
        """The task instance without its try: (dag_id, task_id, run_id, map_index)."""
        return self.dag_id, self.task_id, self.run_id, self.map_index

    def with_try_number(self, try_number: int) -> TaskInstanceKey:
        return self._replace(try_number=try_number)

    def __str__(self) -> str:
        mapped = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.dag_id}.{self.task_id}{mapped} {self.run_id} try {self.try_number}"


class TaskInstanceState(str, Enum):
    """Airflow's task instance states; ``None`` (no state yet) is represented by ``None``."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    UP_FOR_RETRY = "up_for_retry"
    UP_FOR_RESCHEDULE = "up_for_reschedule"
    UPSTREAM_FAILED = "upstream_failed"
    SKIPPED = "skipped"
    REMOVED = "removed"
    RESTARTING = "restarting"
    DEFERRED = "deferred"

    def __str__(self) -> str:
        return self.value


class DagRunState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


S = TaskInstanceState

#: States a task instance never leaves on its own (only clearing takes it back to ``None``).
FINISHED_STATES: frozenset[TaskInstanceState] = frozenset(
    {S.SUCCESS, S.FAILED, S.SKIPPED, S.UPSTREAM_FAILED, S.REMOVED}
)
#: States in which the work is still ahead or under way.
UNFINISHED_STATES: frozenset[TaskInstanceState | None] = frozenset(
    {None, S.SCHEDULED, S.QUEUED, S.RUNNING, S.UP_FOR_RETRY, S.UP_FOR_RESCHEDULE}
    | {S.RESTARTING, S.DEFERRED}
)
#: The live attempts' states as stored in the database: they hold an executor slot and a
#: pool slot.
LIVE_VALUES: tuple[str, ...] = (S.QUEUED.value, S.RUNNING.value)

#: The allowed transitions, source state -> reachable states. ``None`` is "no state".
#: Clearing (-> None) is allowed from every state, as Airflow's ``clear`` does.
TRANSITIONS: dict[TaskInstanceState | None, frozenset[TaskInstanceState | None]] = {
    None: frozenset({S.SCHEDULED, S.QUEUED, S.SKIPPED, S.UPSTREAM_FAILED, S.REMOVED}),
    S.SCHEDULED: frozenset({None, S.QUEUED, S.SKIPPED, S.UPSTREAM_FAILED, S.REMOVED, S.FAILED}),
    S.QUEUED: frozenset(
        {None, S.SCHEDULED, S.RUNNING, S.SUCCESS, S.FAILED, S.UP_FOR_RETRY, S.REMOVED}
    ),
    S.RUNNING: frozenset(
        {None, S.SUCCESS, S.FAILED, S.UP_FOR_RETRY, S.UP_FOR_RESCHEDULE, S.SKIPPED}
        | {S.DEFERRED, S.RESTARTING, S.SCHEDULED, S.REMOVED}
    ),
    S.UP_FOR_RETRY: frozenset({None, S.SCHEDULED, S.QUEUED, S.FAILED, S.REMOVED}),
    S.UP_FOR_RESCHEDULE: frozenset({None, S.SCHEDULED, S.QUEUED, S.FAILED, S.REMOVED}),
    S.DEFERRED: frozenset({None, S.SCHEDULED, S.FAILED, S.REMOVED}),
    S.RESTARTING: frozenset({None, S.UP_FOR_RETRY, S.FAILED, S.REMOVED}),
    S.SUCCESS: frozenset({None, S.REMOVED}),
    S.FAILED: frozenset({None, S.REMOVED}),
    S.SKIPPED: frozenset({None, S.REMOVED}),
    S.UPSTREAM_FAILED: frozenset({None, S.SCHEDULED, S.REMOVED}),
    S.REMOVED: frozenset({None}),
}


class InvalidTransition(ValueError):
    """A state change the transition table does not allow."""


def coerce_state(value: str | TaskInstanceState | None) -> TaskInstanceState | None:
    """``None``/``"none"``/``""`` -> None, a state's value -> the state; anything else errors."""
    if value is None or isinstance(value, TaskInstanceState):
        return value
    if value in ("", "none"):
        return None
    try:
        return TaskInstanceState(value)
    except ValueError:
        allowed = ", ".join(s.value for s in TaskInstanceState)
        raise ValueError(f"unknown task instance state {value!r} (known: {allowed})") from None


def can_transition(old: TaskInstanceState | None, new: TaskInstanceState | None) -> bool:
    """Whether ``old -> new`` is allowed. Staying in the same state is always allowed."""
    return old == new or new in TRANSITIONS[old]


def check_transition(old: TaskInstanceState | None, new: TaskInstanceState | None) -> None:
    """Raise :class:`InvalidTransition` naming both states unless ``old -> new`` is allowed."""
    if not can_transition(old, new):
        raise InvalidTransition(f"task instance cannot go from {old or 'none'} to {new or 'none'}")
