"""QUEUED reports held back for a moment: most attempts start or finish first.

A submitted attempt's QUEUED event says only that Dask accepted it, with its external id.
The scheduler writes each one (an UPDATE of the task instance), and on a fan-out of short
attempts that was one write in five for an id the attempt's RUNNING or outcome event
carries anyway, a few milliseconds later. The DaskExecutor does not need the id stored to
adopt an attempt (its Dask key derives from the task instance's key), so it holds the
report back for ``delay`` seconds and drops it when the attempt starts or finishes first.
An attempt that waits longer (a busy cluster, resources no worker has free) is reported
QUEUED as before.
"""

from __future__ import annotations

from airdask.executors.events import EventInfo
from airdask.state import TaskInstanceKey


class QueuedReports:
    """The QUEUED reports not sent yet, by attempt. ``delay <= 0`` holds nothing."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._held: dict[TaskInstanceKey, tuple[float, EventInfo]] = {}

    def hold(self, key: TaskInstanceKey, info: EventInfo, now: float) -> bool:
        """Keep ``key``'s report until :meth:`due`; False when it is to be sent at once."""
        if self.delay <= 0:
            return False
        self._held[key] = (now + self.delay, info)
        return True

    def settled(self, key: TaskInstanceKey) -> None:
        """``key`` started or finished: its own event says more than QUEUED would."""
        self._held.pop(key, None)

    def due(self, now: float) -> list[tuple[TaskInstanceKey, EventInfo]]:
        """The reports whose attempts waited ``delay`` without starting, taken out."""
        if not self._held:
            return []
        # Held in submission order, so the due ones are a prefix.
        out: list[tuple[TaskInstanceKey, EventInfo]] = []
        for key, (when, info) in self._held.items():
            if when > now:
                break
            out.append((key, info))
        for key, _ in out:
            del self._held[key]
        return out
