"""The DAGs a scheduler holds are left out of Python's full garbage collections.

A 100,000-task DAG is some 370,000 objects the garbage collector tracks (the tasks and
their upstream and downstream sets), and they live as long as the scheduler. Every full
collection walks them all: about 0.2 s each, three in 40 passes over a 100,000-task run,
0.6 s of its 4.4 s of CPU (measured). ``gc.freeze()`` moves what is alive into a
generation the collector no longer walks; what is created afterwards is collected as
usual.

:class:`HeapFreeze` freezes once the scheduler has its DAGs, again whenever the set of DAG
objects changes (a DAG loaded, or reloaded from its edited file), and unfreezes when the
scheduler stops; DAGs of fewer than :data:`FREEZE_MIN_TASKS` tasks in all are not worth
it and are left alone. A DAG that was frozen and is then dropped (reloaded) is part of
reference cycles that only the collector frees: before freezing again, the heap is
unfrozen and collected once, so the old version goes. The freeze is for the whole
process; objects frozen are freed by reference counting as usual, and their cycles
waiting for a collection are collected once the scheduler stops.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping

from airdask.dag import DAG

#: Below this many tasks in all, a full collection costs the DAGs little: nothing is frozen
#: (a scheduler of small DAGs, a notebook's run_dag, the tests).
FREEZE_MIN_TASKS = 10_000


class HeapFreeze:
    def __init__(self) -> None:
        self._seen: set[int] = set()  # ids of the DAG objects at the last settle
        self.frozen = False

    def settle(self, dags: Mapping[str, DAG]) -> bool:
        """Freeze the heap when the DAG objects changed since the last call and hold
        :data:`FREEZE_MIN_TASKS` tasks or more; True if it froze (it collected first: the
        cost of one full collection, then none)."""
        now = {id(dag) for dag in dags.values()}
        if now == self._seen:
            return False
        self._seen = now
        if self.frozen:
            gc.unfreeze()  # a dropped DAG must be collectable
            self.frozen = False
        if sum(len(dag.task_dict) for dag in dags.values()) < FREEZE_MIN_TASKS:
            return False
        gc.collect()
        gc.freeze()
        self.frozen = True
        return True

    def release(self) -> None:
        """Unfreeze (the scheduler stops): what was frozen is collected as usual again."""
        if self.frozen:
            gc.unfreeze()
            self.frozen = False
        self._seen = set()
