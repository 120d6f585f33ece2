"""Queue and pool routing: which Dask worker resources an attempt asks for.

* queue ``None`` or ``default``: no constraint; any other queue asks for ``{queue: 1}`` and
  fails (:class:`NoWorkerError`) when no worker of the cluster offers it;
* pool ``P`` with ``pool_slots=k`` asks for ``{P: k}`` when workers offer ``P``; for a pool no
  worker offers, ``[dask] pool_resources`` decides: ``auto`` (no constraint, warn once per
  pool), ``strict`` (fail) or ``off`` (never constrain by pool).

The resources the workers offer are asked from the scheduler and cached for ``ttl`` seconds;
a resource missing from the cache triggers a refresh (miss-triggered refreshes at most every
``min_refresh`` seconds, so a queue no worker offers does not hammer the scheduler).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from airdask.state import DEFAULT_POOL

log = logging.getLogger(__name__)

DEFAULT_QUEUES = (None, "", "default")
POLICIES = ("auto", "strict", "off")


class NoWorkerError(Exception):
    """No worker of the cluster can run the attempt; the message names what was asked."""


def worker_resources(client: Any) -> dict[str, dict[str, float]]:
    """``{worker address: {resource: amount}}`` for every worker of the cluster."""
    info = client.scheduler_info(n_workers=-1)
    return {
        address: dict(worker.get("resources") or {})
        for address, worker in info.get("workers", {}).items()
    }


def describe_offer(offered: dict[str, float]) -> str:
    if not offered:
        return "none"
    return ", ".join(f"{name}={amount:g}" for name, amount in sorted(offered.items()))


class ResourceRouter:
    """Turns (queue, pool, pool_slots) into Dask resources, or raises NoWorkerError."""

    def __init__(
        self, client: Any, *, policy: str = "auto", ttl: float = 5.0, min_refresh: float = 0.5
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"[dask] pool_resources must be one of {POLICIES}, got {policy!r}")
        self.client = client
        self.policy = policy
        self.ttl = ttl
        self.min_refresh = min_refresh
        self._offered: dict[str, float] = {}  # largest amount any one worker offers
        self._fetched_at = float("-inf")
        # Only refreshes caused by a miss are rate-limited: the first miss after any fetch
        # (e.g. the one at start, before the workers joined) always asks again.
        self._miss_refreshed_at = float("-inf")
        self._warned_pools: set[str] = set()

    def offered(self, *, refresh: bool = False) -> dict[str, float]:
        now = time.monotonic()
        retry = refresh and now - self._miss_refreshed_at > self.min_refresh
        if retry:
            self._miss_refreshed_at = now
        if retry or now - self._fetched_at > self.ttl:
            largest: dict[str, float] = {}
            for resources in worker_resources(self.client).values():
                for name, amount in resources.items():
                    largest[name] = max(largest.get(name, 0.0), float(amount))
            self._offered, self._fetched_at = largest, now
        return self._offered

    def _has(self, name: str, amount: float) -> bool:
        if self.offered().get(name, 0.0) >= amount:
            return True
        return self.offered(refresh=True).get(name, 0.0) >= amount

    def resources_for(
        self, *, queue: str | None, pool: str | None, pool_slots: int = 1
    ) -> dict[str, float] | None:
        """The resources to ask for (None: no constraint)."""
        wanted: dict[str, float] = {}
        if queue not in DEFAULT_QUEUES:
            assert queue is not None
            if not self._has(queue, 1):
                raise NoWorkerError(
                    f"no worker offers queue {queue!r} "
                    f"(workers offer: {describe_offer(self._offered)})"
                )
            wanted[queue] = 1.0
        if pool and pool != DEFAULT_POOL and self.policy != "off":
            slots = float(max(pool_slots, 1))
            if self._has(pool, slots):
                wanted[pool] = wanted.get(pool, 0.0) + slots
            elif pool in self._offered:
                raise NoWorkerError(
                    f"pool {pool!r} needs {slots:g} slots but no worker offers more than "
                    f"{self._offered[pool]:g}"
                )
            elif self.policy == "strict":
                raise NoWorkerError(
                    f"no worker offers pool {pool!r} as a resource ([dask] pool_resources = "
                    f"strict; workers offer: {describe_offer(self._offered)})"
                )
            elif pool not in self._warned_pools:
                self._warned_pools.add(pool)
                log.warning(
                    "no Dask worker offers pool %r as a resource: its tasks run unconstrained "
                    "by worker (start workers with `airdask dask worker` to enforce it)",
                    pool,
                )
        return wanted or None
