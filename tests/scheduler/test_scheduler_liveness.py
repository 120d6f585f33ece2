"""The heartbeat thread (:mod:`airdask.scheduler.liveness`): a pass longer than the health
check threshold does not get its scheduler declared dead; a pass stuck far longer does."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import pytest

from airdask.config import Config
from airdask.dag import DAG, BashTask
from airdask.executors import BaseExecutor, EventInfo
from airdask.scheduler import jobs, liveness
from airdask.scheduler.loop import SchedulerJob
from airdask.state import TaskInstanceKey
from airdask.store import Job, Store
from airdask.store.models import utcnow
from proc_support import wait_for
from sched_support import make_store, run_in_thread, run_state

THRESHOLD = 0.5


class StallingExecutor(BaseExecutor):
    """Its first sync() with an attempt to report blocks until ``release`` is set: the pass
    that calls it takes as long as the test wants."""

    is_local = True

    def __init__(self, config: Config) -> None:
        super().__init__(1, config=config)
        self.todo: list[TaskInstanceKey] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def execute_async(
        self, key: TaskInstanceKey, command: Any, queue: str | None = None,
        executor_config: Any | None = None,
    ) -> None:  # fmt: skip
        self.todo.append(key)

    def sync(self) -> None:
        if self.todo and not self.release.is_set():
            self.entered.set()
            self.release.wait(120)
        while self.todo:
            self.success(self.todo.pop(), EventInfo("exit code 0"))


def _heartbeat_of(store: Store, job_id: int) -> datetime:
    with store.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.latest_heartbeat


@pytest.mark.timeout(120)
def test_a_slow_pass_keeps_its_job_alive_and_a_stuck_one_does_not(config: Config) -> None:
    config = config.with_overrides(
        {
            ("scheduler", "job_heartbeat_sec"): 0.05,
            ("scheduler", "scheduler_health_check_threshold"): THRESHOLD,
        }
    )
    store = make_store(config)
    with DAG("slow") as dag:
        BashTask("a", "true")
    executor = StallingExecutor(config)
    job = SchedulerJob(store=store, executor=executor, config=config, dags={"slow": dag})
    run_id, side = run_in_thread(job, dag)
    job_id = job.job_id
    assert job_id is not None
    try:
        assert executor.entered.wait(60), "the pass never reached the executor"
        blocked_at = utcnow()
        # Slow: heartbeats go on well past the threshold, and the health check finds the
        # job alive (mark_dead is what another scheduler runs).
        later = blocked_at + timedelta(seconds=3 * THRESHOLD)
        wait_for(lambda: _heartbeat_of(store, job_id) > later, timeout=30,
                 what="a heartbeat three thresholds into the blocked pass")  # fmt: skip
        with store.session() as session:
            assert jobs.mark_dead(session, job_id=0, threshold=THRESHOLD) == []
        # Stuck: past STALL_FACTOR thresholds the row goes stale.
        stall = timedelta(seconds=liveness.STALL_FACTOR * THRESHOLD)
        wait_for(
            lambda: utcnow() - _heartbeat_of(store, job_id) > timedelta(seconds=THRESHOLD),
            timeout=30 + stall.total_seconds(),
            what="the heartbeat of a stuck pass to go stale",
        )
        assert _heartbeat_of(store, job_id) > blocked_at + stall - timedelta(seconds=THRESHOLD)
    finally:
        executor.release.set()
        side.join(60)
    assert not side.is_alive()
    assert run_state(store, "slow", run_id) == "success"
    store.dispose()
