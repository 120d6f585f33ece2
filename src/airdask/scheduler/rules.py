"""Trigger rules and readiness: pure functions over upstream state counts (Airflow's rules).

:func:`evaluate` answers, for a task instance that has not started, what to do now given its
upstream task instances' states: wait, run, or settle it as ``skipped``/``upstream_failed``
without running. Like Airflow, rules settle eagerly where they can (``all_success`` marks
``upstream_failed`` as soon as one upstream failed, without waiting for the others).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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


def evaluate(rule: str, up: UpstreamCounts) -> Decision:
    """What a not-yet-started task instance with trigger ``rule`` should do now."""
    if up.total == 0 or rule == "always":
        return Decision.RUN
    if rule == "all_success":
        if up.failures:
            return Decision.UPSTREAM_FAILED
        if up.skipped:
            return Decision.SKIP
        return Decision.RUN if up.success + up.removed >= up.total else Decision.WAIT
    if rule == "all_failed":
        if up.success or up.skipped:
            return Decision.SKIP
        return Decision.RUN if up.all_done else Decision.WAIT
    if rule == "all_done":
        return Decision.RUN if up.all_done else Decision.WAIT
    if rule == "one_success":
        if up.success:
            return Decision.RUN
        if up.all_done:
            return Decision.SKIP if up.skipped == up.done else Decision.UPSTREAM_FAILED
        return Decision.WAIT
    if rule == "one_failed":
        if up.failures:
            return Decision.RUN
        return Decision.SKIP if up.all_done else Decision.WAIT
    if rule == "one_done":
        if up.success or up.failed:
            return Decision.RUN
        return Decision.SKIP if up.all_done else Decision.WAIT
    if rule == "none_failed":
        if up.failures:
            return Decision.UPSTREAM_FAILED
        return Decision.RUN if up.all_done else Decision.WAIT
    if rule == "none_failed_min_one_success":
        if up.failures:
            return Decision.UPSTREAM_FAILED
        if not up.all_done:
            return Decision.WAIT
        return Decision.RUN if up.success else Decision.SKIP
    if rule == "none_skipped":
        if up.skipped:
            return Decision.SKIP
        return Decision.RUN if up.all_done else Decision.WAIT
    raise ValueError(f"unknown trigger rule {rule!r}")


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
