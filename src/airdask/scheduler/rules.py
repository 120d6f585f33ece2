"""Trigger rules and readiness: pure functions over upstream state counts (Airflow's rules).

:func:`evaluate` answers, for a task instance that has not started, what to do now given its
upstream task instances' states: wait, run, or settle it as ``skipped``/``upstream_failed``
without running. Like Airflow, rules settle eagerly where they can (``all_success`` marks
``upstream_failed`` as soon as one upstream failed, without waiting for the others).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from airdask.state import TaskInstanceState

S = TaskInstanceState


class Decision(str, Enum):
    WAIT = "wait"
    RUN = "run"
    SKIP = "skipped"
    UPSTREAM_FAILED = "upstream_failed"


@dataclass(frozen=True)
class UpstreamCounts:
    """How many upstream task instances are in each finished state, out of ``total``."""

    total: int
    success: int = 0
    skipped: int = 0
    failed: int = 0
    upstream_failed: int = 0
    removed: int = 0

    @classmethod
    def of(cls, states: Iterable[TaskInstanceState | str | None]) -> UpstreamCounts:
        counts = dict.fromkeys(("success", "skipped", "failed", "upstream_failed", "removed"), 0)
        total = 0
        for state in states:
            total += 1
            value = state.value if isinstance(state, TaskInstanceState) else state
            if value in counts:
                counts[value] += 1
        return cls(total=total, **counts)

    @classmethod
    def of_counts(cls, counts: Mapping[str | None, int]) -> UpstreamCounts:
        """From ``{state: how many}`` (a mapped upstream's thousands of instances are a
        few entries, not thousands)."""
        known = ("success", "skipped", "failed", "upstream_failed", "removed")
        return cls(total=sum(counts.values()), **{name: int(counts.get(name, 0)) for name in known})

    @property
    def done(self) -> int:
        return self.success + self.skipped + self.failed + self.upstream_failed + self.removed

    @property
    def all_done(self) -> bool:
        return self.done >= self.total

    @property
    def failures(self) -> int:
        return self.failed + self.upstream_failed


def _when_done(up: UpstreamCounts, then: Decision) -> Decision:
    return then if up.all_done else Decision.WAIT


def _all_success(up: UpstreamCounts) -> Decision:
    if up.failures:
        return Decision.UPSTREAM_FAILED
    if up.skipped:
        return Decision.SKIP
    return Decision.RUN if up.success + up.removed >= up.total else Decision.WAIT


def _all_failed(up: UpstreamCounts) -> Decision:
    return Decision.SKIP if up.success or up.skipped else _when_done(up, Decision.RUN)


def _one_success(up: UpstreamCounts) -> Decision:
    if up.success:
        return Decision.RUN
    return _when_done(up, Decision.SKIP if up.skipped == up.done else Decision.UPSTREAM_FAILED)


def _one_failed(up: UpstreamCounts) -> Decision:
    return Decision.RUN if up.failures else _when_done(up, Decision.SKIP)


def _one_done(up: UpstreamCounts) -> Decision:
    return Decision.RUN if up.success or up.failed else _when_done(up, Decision.SKIP)


def _none_failed(up: UpstreamCounts) -> Decision:
    return Decision.UPSTREAM_FAILED if up.failures else _when_done(up, Decision.RUN)


def _none_failed_min_one_success(up: UpstreamCounts) -> Decision:
    if up.failures:
        return Decision.UPSTREAM_FAILED
    return _when_done(up, Decision.RUN if up.success else Decision.SKIP)


def _none_skipped(up: UpstreamCounts) -> Decision:
    return Decision.SKIP if up.skipped else _when_done(up, Decision.RUN)


#: Each trigger rule's decision, given its upstream counts (``up.total > 0``). The keys are
#: :data:`airdask.dag.TRIGGER_RULES` (a test checks it).
RULES: dict[str, Callable[[UpstreamCounts], Decision]] = {
    "all_success": _all_success,
    "all_failed": _all_failed,
    "all_done": lambda up: _when_done(up, Decision.RUN),
    "one_success": _one_success,
    "one_failed": _one_failed,
    "one_done": _one_done,
    "none_failed": _none_failed,
    "none_failed_min_one_success": _none_failed_min_one_success,
    "none_skipped": _none_skipped,
    "always": lambda up: Decision.RUN,
}


def evaluate(rule: str, up: UpstreamCounts) -> Decision:
    """What a not-yet-started task instance with trigger ``rule`` should do now: run at once
    without upstream tasks, else what :data:`RULES` says.

    :raises ValueError: ``rule`` is not a trigger rule.
    """
    decide = RULES.get(rule)
    if decide is None:
        raise ValueError(f"unknown trigger rule {rule!r}")
    return Decision.RUN if up.total == 0 else decide(up)


def decision_state(decision: Decision) -> TaskInstanceState | None:
    """The state a decision puts a task instance in (``None`` for WAIT)."""
    return {
        Decision.WAIT: None,
        Decision.RUN: S.SCHEDULED,
        Decision.SKIP: S.SKIPPED,
        Decision.UPSTREAM_FAILED: S.UPSTREAM_FAILED,
    }[decision]


def should_retry(try_number: int, max_tries: int) -> bool:
    """Whether a failed attempt ``try_number`` gets another try (Airflow:
    ``try_number <= max_tries``, where ``max_tries`` is the task's ``retries``)."""
    return try_number <= max_tries
