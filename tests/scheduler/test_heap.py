"""The scheduler's DAGs out of full garbage collections (scheduler/heap.py): frozen while it
runs, a replaced DAG still collected, nothing left frozen after it stops."""

from __future__ import annotations

import gc
import weakref

import pytest

from airdask.config import Config
from airdask.dag import DAG, BashTask
from airdask.executors import load_executor
from airdask.scheduler import heap
from airdask.scheduler.heap import HeapFreeze
from airdask.scheduler.loop import SchedulerJob
from proc_support import wait_for
from sched_support import make_store


def _dag(dag_id: str, n: int) -> DAG:
    with DAG(dag_id) as dag:
        for i in range(n):
            BashTask(f"t{i}", "true")
    return dag


@pytest.fixture
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "FREEZE_MIN_TASKS", 5)
    assert gc.get_freeze_count() == 0  # nothing else in this process froze


def test_a_large_dag_is_frozen_and_a_replaced_one_still_collected(small_threshold: None) -> None:
    freeze = HeapFreeze()
    try:
        old = _dag("big", 5)
        assert freeze.settle({"big": old}) and gc.get_freeze_count() > 0
        assert not freeze.settle({"big": old})  # nothing changed: no collection
        gone = weakref.ref(old)
        new = _dag("big", 6)
        del old
        assert freeze.settle({"big": new})
        # The frozen old version was unfrozen, so a collection frees it: settle's own, or,
        # when another thread was collecting just then (gc.collect() is a no-op while one
        # runs; a Dask client an earlier test left behind is finalised in such a run), a
        # later one. Frozen, it would never go.
        wait_for(lambda: gc.collect() >= 0 and gone() is None, timeout=10,
                 what="the replaced DAG to be collected")  # fmt: skip
    finally:
        freeze.release()
    assert gc.get_freeze_count() == 0 and not freeze.frozen


def test_small_dags_are_left_alone(small_threshold: None) -> None:
    freeze = HeapFreeze()
    assert not freeze.settle({"a": _dag("a", 2), "b": _dag("b", 2)})
    assert gc.get_freeze_count() == 0 and not freeze.frozen


def test_a_scheduler_freezes_while_it_runs(small_threshold: None, config: Config) -> None:
    store = make_store(config)
    executor = load_executor("SequentialExecutor", config=config)
    job = SchedulerJob(store=store, executor=executor, config=config, dags={"big": _dag("big", 5)})
    job.start()
    try:
        assert job.heap.frozen and gc.get_freeze_count() > 0
        job.run_once()
        assert job.heap.frozen
    finally:
        job.stop()
    assert not job.heap.frozen and gc.get_freeze_count() == 0
