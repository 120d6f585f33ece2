"""Open-slot accounting, pure: pools, ``[core] parallelism`` and the executor's slots.

Airflow's rule: a pool's open slots are ``slots - (pool_slots of its running and queued task
instances)``. A pass hands a task instance to the executor only while its pool, the
scheduler's parallelism and the executor all have room; :class:`SlotBudget` tracks that
within one pass. What pools hold is read by :func:`airdask.store.queries.pool_usage`.
"""

from __future__ import annotations

from collections.abc import Mapping


class SlotBudget:
    """What one pass may still hand out: per pool, overall (parallelism) and per executor.

    :param executor_open: open slots per executor id; None when the caller checks no
        executor (then ``take`` ignores its ``executor``).
    """

    def __init__(
        self,
        pool_open: Mapping[str, int],
        *,
        total: int,
        executor_open: Mapping[str, int] | None = None,
    ) -> None:
        self.pool_open = dict(pool_open)
        self.total = max(total, 0)
        self.executor_open = None if executor_open is None else dict(executor_open)

    def take(self, pool: str, pool_slots: int, executor: str | None = None) -> str | None:
        """Reserve room for one task instance (on ``executor``, an id); return None, or
        why it cannot start now."""
        if self.total <= 0:
            return "no open slots (parallelism or executor)"
        if pool not in self.pool_open:
            return f"pool {pool!r} does not exist"
        if self.pool_open[pool] < pool_slots:
            return f"pool {pool!r} has {max(self.pool_open[pool], 0)} open slots"
        if self.executor_open is not None and executor is not None:
            if self.executor_open.get(executor, 0) <= 0:
                return f"executor {executor!r} has no open slots"
            self.executor_open[executor] -= 1
        self.pool_open[pool] -= pool_slots
        self.total -= 1
        return None

    @property
    def exhausted(self) -> bool:
        return self.total <= 0

    def full_pools(self) -> set[str]:
        """Pools with no open slot left (a query can leave their task instances out)."""
        return {name for name, free in self.pool_open.items() if free <= 0}
