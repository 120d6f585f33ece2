"""Waiting between passes: the arrivals counter, the pause rule, and a loop woken by outcomes."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airdask.config import Config
from airdask.dag import DAG, PythonTask
from airdask.executors.arrivals import Arrivals
from airdask.scheduler.executors import ExecutorSet
from airdask.scheduler.loop import MAX_TIS_PER_PASS, PassResult, SchedulerJob
from airdask.scheduler.pacing import PASS_BATCH, Pause, pause_after
from airdask.scheduler.single_run import drive_run
from airdask.store import Store
from sched_support import make_store

pytestmark = pytest.mark.timeout(120)


def test_a_wait_ends_once_enough_outcomes_arrived() -> None:
    arrivals = Arrivals()
    arrivals.add(2)  # before the pass collected them: not this pass's news
    assert arrivals.take() == 2
    ready = threading.Event()

    def add_three() -> None:
        ready.wait(10)
        for _ in range(3):
            arrivals.add()

    thread = threading.Thread(target=add_three)
    thread.start()
    ready.set()
    assert arrivals.wait(3, timeout=30) == 3  # returns on the third, not after 30 s
    thread.join(10)
    assert arrivals.wait(3, timeout=0) == 3  # already there: no wait at all


def test_a_wait_gives_up_after_its_timeout_with_what_arrived() -> None:
    arrivals = Arrivals()
    arrivals.add()
    started = time.monotonic()
    assert arrivals.wait(5, timeout=0.2) == 1
    assert time.monotonic() - started >= 0.2


def test_wake_ends_a_wait_until_the_next_take() -> None:
    arrivals = Arrivals()
    waiting = threading.Event()
    got: list[int] = []

    def wait() -> None:
        waiting.set()
        got.append(arrivals.wait(1, timeout=60))

    thread = threading.Thread(target=wait)
    thread.start()
    waiting.wait(10)
    arrivals.wake()
    thread.join(10)
    assert not thread.is_alive() and got == [0]
    assert arrivals.wait(1, timeout=30) == 0  # still woken: a stop is on its way
    arrivals.take()
    assert arrivals.wait(1, timeout=0.05) == 0  # taken: waits again


def _pause(result: PassResult, in_flight: int) -> Pause | None:
    return pause_after(
        result,
        in_flight=in_flight,
        full_budget=MAX_TIS_PER_PASS,
        loop_interval=0.5,
        batch_wait=0.05,
    )


def test_pause_rule() -> None:
    # Nothing moved: wait for the first outcome, up to loop_interval.
    assert _pause(PassResult(), in_flight=0) == Pause(1, 0.5)
    assert _pause(PassResult(), in_flight=7) == Pause(1, 0.5)
    # A few outcomes while attempts run: wait for a batch, never more than a share of them.
    assert _pause(PassResult(events=3, queued=3), in_flight=1000) == Pause(PASS_BATCH, 0.05)
    assert _pause(PassResult(events=3, queued=3), in_flight=40) == Pause(10, 0.05)
    assert _pause(PassResult(events=1), in_flight=1) == Pause(1, 0.05)
    # Nothing in flight, or more to do than outcomes to record: pass again at once.
    assert _pause(PassResult(events=3), in_flight=0) is None
    assert _pause(PassResult(events=3, settled=1), in_flight=50) is None
    assert _pause(PassResult(started_runs=1), in_flight=50) is None
    assert _pause(PassResult(created_runs=1), in_flight=50) is None
    assert _pause(PassResult(queued=MAX_TIS_PER_PASS), in_flight=5000) is None
    # batch_wait = 0: the old loop, which passed again after any busy pass.
    assert (
        pause_after(PassResult(events=3), in_flight=50, full_budget=512,
                    loop_interval=0.5, batch_wait=0) is None
    )  # fmt: skip


def test_an_executor_set_hands_one_counter_to_its_executors(config: Config) -> None:
    from airdask.executors import load_executor
    from airdask.executors.names import ExecutorName

    first = load_executor("SequentialExecutor", config=config)
    second = load_executor("LocalExecutor", config=config)
    executors = ExecutorSet(
        [(ExecutorName("SequentialExecutor"), first), (ExecutorName("LocalExecutor"), second)],
        parallelism=0,
    )
    assert first.arrivals is executors.arrivals and second.arrivals is executors.arrivals
    first.arrivals.add(4)
    executors.heartbeat()  # collects what arrived: a new count begins
    assert executors.arrivals.count == 0


def test_a_local_dask_executor_hands_the_counter_to_its_dask_side(config: Config) -> None:
    from airdask.executors.local_dask import LocalDaskExecutor
    from airdask.executors.names import ExecutorName

    both = LocalDaskExecutor("tcp://127.0.0.1:1", config=config)  # never started
    executors = ExecutorSet([(ExecutorName("LocalDaskExecutor"), both)], parallelism=0)
    assert both.dask_executor.arrivals is executors.arrivals
    assert both.local_executor.arrivals is executors.arrivals
    assert both.arrivals is executors.arrivals


# ---- a real loop on a real Dask cluster -------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from dask_support import local_cluster

    with local_cluster(n_workers=1, threads=2) as found:
        yield found


@pytest.fixture
def store(config: Config) -> Store:
    return make_store(config)


def _noop() -> None:
    return None


def test_outcomes_wake_a_waiting_loop(store: Store, config: Config, cluster: Any) -> None:
    """Waits of 30 s between passes, and a chain of four tasks still finishes within 20 s:
    each outcome ends the wait it arrives in (the Dask executor counts it)."""
    from airdask.executors.dask import DaskExecutor

    slow = config.with_overrides(
        {("scheduler", "loop_interval"): 30, ("scheduler", "batch_wait"): 30}
    )
    with DAG("woken") as dag:
        tasks = [PythonTask(f"t{i}", _noop) for i in range(4)]
        for upstream, downstream in itertools.pairwise(tasks):
            upstream >> downstream
    executor = DaskExecutor(cluster.scheduler_address, config=slow)
    job = SchedulerJob(store=store, executor=executor, config=slow, dags={"woken": dag})
    outcome = drive_run(job, dag, timeout=20, handle_signals=False)
    assert not outcome.timed_out and outcome.state == "success"


def test_a_stop_ends_the_wait_between_passes(store: Store, config: Config) -> None:
    slow = config.with_overrides({("scheduler", "loop_interval"): 60})
    from airdask.executors import load_executor

    job = SchedulerJob(
        store=store, executor=load_executor("SequentialExecutor", config=slow), config=slow
    )
    passes = threading.Event()
    thread = threading.Thread(
        target=job.run, kwargs={"on_pass": lambda _: passes.set(), "handle_signals": False}
    )
    thread.start()
    assert passes.wait(30)  # it passed once and now waits up to 60 s
    job.request_stop()
    thread.join(15)
    assert not thread.is_alive()


def test_driving_a_run_reads_its_state_when_a_pass_ends_it_not_every_pass(
    store: Store, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``drive_run`` learns of the end from the pass that finished the run; with the
    time-based recheck pushed out of reach, the run still ends, after a few reads."""
    from airdask.dag import BashTask
    from airdask.executors import load_executor
    from airdask.scheduler import single_run

    monkeypatch.setattr(single_run, "STATE_RECHECK_SECONDS", 1000.0)
    reads: list[str] = []
    real = single_run._run_state

    def counted(*args: Any) -> str | None:
        reads.append("read")
        return real(*args)

    monkeypatch.setattr(single_run, "_run_state", counted)
    with DAG("chain") as dag:
        tasks = [BashTask(f"t{i}", "true") for i in range(8)]
        for upstream, downstream in itertools.pairwise(tasks):
            upstream >> downstream
    job = SchedulerJob(
        store=store,
        executor=load_executor("SequentialExecutor", config=config),
        config=config,
        dags={"chain": dag},
    )
    passes: list[int] = []
    real_once = job.run_once

    def once() -> PassResult:
        passes.append(1)
        return real_once()

    monkeypatch.setattr(job, "run_once", once)
    outcome = drive_run(job, dag, timeout=60, handle_signals=False)
    assert outcome.state == "success" and not outcome.timed_out
    assert len(passes) >= 8
    # the first pass (which started the run), the pass that ended it, and the outcome's
    assert len(reads) <= 3
