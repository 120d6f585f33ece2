"""How many outcomes reached a scheduler's executors since its last pass looked.

The scheduler's loop waits on this between passes instead of polling (see
:func:`airdask.scheduler.pacing.pause_after`): it wakes as soon as enough outcomes are there
for the next pass to be worth its fixed cost, or when its wait runs out. An executor that
learns of outcomes on a thread of its own (the Dask executor's event handlers) calls
:meth:`Arrivals.add` for each; one that learns of them only inside ``sync()`` never does,
and the loop then waits the whole pause, as it slept before this existed.
"""

from __future__ import annotations

import threading


class Arrivals:
    """A thread-safe count of arrived outcomes, with a wait for ``count`` of them."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._count = 0
        self._woken = False

    @property
    def count(self) -> int:
        """Outcomes that arrived since the last :meth:`take`."""
        return self._count

    def add(self, n: int = 1) -> None:
        """``n`` outcomes arrived (any thread)."""
        with self._cond:
            self._count += n
            self._cond.notify_all()

    def take(self) -> int:
        """Start counting afresh (the scheduler is about to collect what arrived); the count
        until now."""
        with self._cond:
            count, self._count, self._woken = self._count, 0, False
            return count

    def wake(self) -> None:
        """End the current (or next) :meth:`wait` at once: a stop was requested."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def wait(self, count: int, timeout: float) -> int:
        """Block until ``count`` outcomes arrived since the last :meth:`take`, :meth:`wake`
        was called, or ``timeout`` seconds passed; the count then."""
        with self._cond:
            self._cond.wait_for(lambda: self._count >= count or self._woken, timeout)
            return self._count
