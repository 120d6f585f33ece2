"""DaskExecutor on real clusters: an embedded LocalCluster, a passed-in Client, and
``dask scheduler``/``dask worker`` subprocesses (including a worker that cannot import
airdask)."""

from __future__ import annotations

import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from distributed import Client, Event

from airdask import PythonCommand
from airdask.commands import dask_key, task_group
from airdask.config import Config
from airdask.executors import load_executor
from airdask.executors.dask import DaskExecutor
from airdask.executors.dask.adoption import split_external_id
from airdask.executors.dask.shipping import ShippingError
from airdask.executors.events import EventInfo
from airdask.logs import read_log
from airdask.state import TaskInstanceKey, TaskInstanceState
from airdask.store import Pool, Store, init_db
from airdask.store.queries import pool_resources_of
from dask_support import ExternalCluster, external_cluster, local_cluster
from executor_support import drain, make_ti
from proc_support import pid_alive, pids_file_complete, read_pids, spawn_tree_script, wait_for
from task_funcs import say, wait_for_event

S = TaskInstanceState


def events_of(ex: DaskExecutor, key: TaskInstanceKey, into: list[tuple[S, Any]]) -> None:
    for k, value in ex.get_event_buffer().items():
        if k == key:
            into.append(value)


def events_until(ex: DaskExecutor, key: TaskInstanceKey, state: S) -> list[tuple[S, Any]]:
    """Heartbeat until ``key`` has reported ``state``; every event of ``key`` seen so far."""
    got: list[tuple[S, Any]] = []

    def seen() -> bool:
        ex.heartbeat()
        events_of(ex, key, got)
        return any(s is state for s, _ in got)

    wait_for(seen, timeout=30, what=f"{key} {state.value}")
    return got


def test_dask_key_groups_by_dag_and_task_in_the_dashboard() -> None:
    from dask.utils import key_split as dask_split
    from distributed.utils import key_split as dist_split

    keys = [
        TaskInstanceKey("etl", "load-all", "manual__2026-01-01T00:00:00", 3, -1),
        TaskInstanceKey("etl", "load-all", "manual__2026-01-01T00:00:00", 3, 7),
        TaskInstanceKey("my-dag", "x", "scheduled__1", 1, -1),
    ]
    names = [dask_key(k) for k in keys]
    assert dask_split(names[0]) == dist_split(names[0]) == "etl.load_all"
    assert dask_split(names[1]) == "etl.load_all"
    assert dask_split(names[2]) == "my_dag.x"
    assert len(set(names)) == 3
    assert dask_key(keys[0]) == names[0]  # deterministic
    assert dask_key(keys[0].with_try_number(4)) != names[0]


def test_numbered_tasks_are_one_dask_group() -> None:
    from distributed.utils import key_split

    fan = [TaskInstanceKey("scale", f"t{i:06d}", "r", 1, -1) for i in range(3)]
    names = {dask_key(k) for k in fan}
    assert {key_split(n) for n in names} == {"scale.t"} and len(names) == 3
    assert all("-t00000" in n for n in names)  # the task id is still in the key
    groups = {"load_file_17": "load_file", "extract-2024-01": "extract", "v2": "v",
              "123": "123", "step_1a": "step_1a", "a.b.3": "a.b"}  # fmt: skip
    assert {t: task_group(t) for t in groups} == groups


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with local_cluster(n_workers=2, threads=2, resources={"io": 2}) as c:
        yield c


@pytest.fixture
def client(cluster: Any) -> Iterator[Any]:
    from distributed import Client

    with Client(cluster, set_as_default=False) as c:
        yield c


@pytest.mark.timeout(90)
def test_queued_is_reported_only_for_an_attempt_that_waits(client: Any, config: Config) -> None:
    """QUEUED (the external id) is held back for queued_report_seconds: an attempt that
    waits that long behind busy threads is reported; one that starts at once is not."""
    delay = 2.0
    ex = DaskExecutor(client=client, config=config, queued_report_seconds=delay)
    ex.start()
    gate = f"gate-{uuid.uuid4().hex}"
    seen: dict[TaskInstanceKey, list[tuple[TaskInstanceState, Any]]] = defaultdict(list)

    def pump(until: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 40
        while not until():
            assert time.monotonic() < deadline, dict(seen)
            ex.heartbeat()
            for key, event in ex.get_event_buffer().items():
                seen[key].append(event)
            time.sleep(0.02)

    def states(ti: Any) -> list[TaskInstanceState]:
        return [state for state, _ in seen[ti.key]]

    blockers = [make_ti(f"b{i}") for i in range(4)]  # every thread of the 2 x 2 cluster
    for ti in blockers:
        ex.queue_command(ti, PythonCommand(wait_for_event, gate))
    pump(lambda: all(S.RUNNING in states(ti) for ti in blockers))
    waiting = make_ti("waiting")
    submitted = time.monotonic()
    ex.queue_command(waiting, PythonCommand(say, "waited"))
    pump(lambda: bool(seen[waiting.key]))
    assert states(waiting) == [S.QUEUED] and time.monotonic() - submitted >= delay
    info = seen[waiting.key][0][1]
    assert info.external_executor_id == f"{ex.scheduler_id}/{dask_key(waiting.key)}"
    Event(gate, client=client).set()
    pump(lambda: all(S.SUCCESS in states(ti) for ti in [*blockers, waiting]))
    quick = make_ti("quick")
    ex.queue_command(quick, PythonCommand(say, "at once"))
    pump(lambda: S.SUCCESS in states(quick))
    assert S.QUEUED not in states(quick)  # its outcome carries the id
    _, info = seen[quick.key][-1]
    assert info.external_executor_id == f"{ex.scheduler_id}/{dask_key(quick.key)}"
    ex.end()


def test_passed_in_client_is_reused_and_left_open(client: Any, config: Config) -> None:
    ex = DaskExecutor(client=client, config=config, queued_report_seconds=0)
    ex.start()
    assert ex.client is client
    assert ex.dashboard_link and ex.dashboard_link.startswith("http")
    argv_ti, py_ti = make_ti("argv"), make_ti("py")
    ex.queue_command(argv_ti, ["bash", "-c", "echo out; exit 3"], priority=7)
    ex.queue_command(py_ti, PythonCommand(say, "hello"))
    seen: list[tuple[TaskInstanceKey, S, Any]] = []
    ex.trigger_tasks(2)  # no sync yet: a quick task's outcome would replace its queued event
    for key, (state, info) in ex.get_event_buffer().items():
        seen.append((key, state, info))
    events = drain(ex, [argv_ti.key, py_ti.key])
    queued = [(k, i) for k, s, i in seen if s is S.QUEUED]
    assert {k for k, _ in queued} == {argv_ti.key, py_ti.key}
    for key, info in queued:
        assert isinstance(info, EventInfo) and info.kind == "queued"
        parsed = split_external_id(info.external_executor_id)
        assert parsed == (ex.scheduler_id, dask_key(key))
    state, info = events[argv_ti.key]
    assert state is S.FAILED and info.kind == "exit_code" and info.exit_code == 3
    assert info.external_executor_id == f"{ex.scheduler_id}/{dask_key(argv_ti.key)}"
    assert events[py_ti.key][0] is S.SUCCESS
    _, lines = ex.get_task_log(py_ti, 1)
    assert "hello" in lines
    ex.end()
    assert client.status == "running"  # not closed by the executor
    # finished attempts are forgotten at once, and end() acknowledged every outcome
    assert client.run_on_scheduler(_airdask_tasks) == []
    assert client.sync(client.scheduler.airdask_keeper_info) == {"live": 0, "kept": 0}
    assert not client.list_datasets()


def _airdask_tasks(dask_scheduler: Any) -> list[str]:
    return [str(k) for k in dask_scheduler.tasks if "-try" in str(k)]


def keeper_knows(client: Any, name: str) -> dict[str, Any] | None:
    """What the keeper says of the Dask key ``name`` (see executors/dask/keeper.py)."""
    return client.sync(client.scheduler.airdask_lookup, keys=[name])[name]  # type: ignore[no-any-return]


def test_adoption_by_dask_key_from_the_keeper(cluster: Any, client: Any, config: Config) -> None:
    """A dead executor's attempts are found by their Dask keys (derived from the task
    instance keys, so a missing external id does not matter): a running one is adopted and
    harvested, a finished one is reported from the keeper's copy at once, one never
    submitted and one of another Dask scheduler are left to the caller."""
    gone = DaskExecutor(cluster.scheduler_address, config=config)
    new = DaskExecutor(cluster.scheduler_address, config=config)
    running, finished = make_ti("running", dag_id="orphans"), make_ti("done", dag_id="orphans")
    never, foreign = make_ti("never", dag_id="orphans"), make_ti("foreign", dag_id="orphans")
    foreign.external_executor_id = f"Scheduler-gone/{dask_key(foreign.key)}"
    try:
        gone.queue_command(running, PythonCommand(wait_for_event, "adopt-gate"))
        gone.queue_command(finished, PythonCommand(say, "finished while orphaned"))
        gone.trigger_tasks(2)
        wait_for(lambda: keeper_knows(client, dask_key(running.key)) is not None, timeout=30,
                 what="the submission to reach the scheduler")  # fmt: skip
        gone.client.close()  # as if its process died before it recorded anything
        wait_for(lambda: "outcome" in (keeper_knows(client, dask_key(finished.key)) or {}),
                 timeout=30, what="the orphaned attempt to finish")  # fmt: skip
        new.start()
        left = new.try_adopt_task_instances([running, finished, never, foreign])
        assert {ti.task_id for ti in left} == {"never", "foreign"}
        assert new.has_task(running) and not new.has_task(finished)
        state, info = new.get_event_buffer()[finished.key]
        assert state is S.SUCCESS and info.kind == "success"
        _, lines = new.get_task_log(finished, 1)
        assert "finished while orphaned" in lines
    finally:
        Event("adopt-gate", client=client).set()
    wait_for(lambda: "outcome" in (keeper_knows(client, dask_key(running.key)) or {}),
             timeout=60, what="the adopted attempt to finish")  # fmt: skip
    assert drain(new, [running.key])[running.key][0] is S.SUCCESS
    new.end()
    for ti in (running, finished):  # acknowledged, forgotten
        assert keeper_knows(client, dask_key(ti.key)) is None


def test_a_finished_attempt_is_not_run_again_when_its_worker_dies(
    config: Config, tmp_path: Path
) -> None:
    """Issue 15, points 1 and 6: nothing holds a finished attempt, not even before it is
    harvested, so killing the workers that ran it does not make Dask run it again; the
    outcomes they pushed are the truth."""
    import os
    import signal

    from task_funcs import append_line

    ledger = tmp_path / "ledger"
    tis = [make_ti(f"t{i}", dag_id="once") for i in range(8)]
    with local_cluster(n_workers=2, threads=2) as cl:
        ex = DaskExecutor(cl.scheduler_address, config=config, parallelism=0)
        ex.start()
        for ti in tis:
            ex.queue_command(ti, PythonCommand(append_line, str(ledger), ti.task_id))
        ex.trigger_tasks(len(tis))  # submitted, not harvested
        wait_for(lambda: ledger.exists() and len(ledger.read_text().split()) == len(tis),
                 timeout=30, what="every attempt to finish")  # fmt: skip
        for pid in ex.client.run(os.getpid).values():
            os.kill(pid, signal.SIGKILL)
        ex.client.wait_for_workers(2, timeout=60)  # the nannies restarted them
        assert ex.client.run_on_scheduler(_airdask_tasks) == []  # nothing to run again
        events = drain(ex, [ti.key for ti in tis])
        assert all(state is S.SUCCESS for state, _ in events.values()), events
        ex.end()
    assert sorted(ledger.read_text().split()) == sorted(ti.task_id for ti in tis)


def test_end_finds_attempts_whose_notification_was_lost(
    client: Any, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    import airdask.executors.dask.executor as dask_module
    from airdask.executors.dask.tracking import Tracker

    monkeypatch.setattr(dask_module, "END_SWEEP_SECONDS", 1.0)
    monkeypatch.setattr(Tracker, "on_finished", lambda self, event: None)  # events are lost
    ex = DaskExecutor(client=client, config=config)
    ti = make_ti("lost", dag_id="sweep")
    ex.queue_command(ti, ["true"])
    ex.heartbeat()
    ex.end()  # would wait forever without the sweep, which asks the keeper
    state, info = ex.get_event_buffer()[ti.key]
    assert state is S.SUCCESS and info.kind == "success"


def test_terminate_withdraws_everything_in_one_request(
    client: Any, config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keeper makes Dask forget the attempts; the worker plugin kills the commands of
    those that run: no round trip per worker, nor per attempt."""
    ex = DaskExecutor(client=client, config=config, parallelism=0)
    pid_files = [tmp_path / f"pids{i}" for i in range(8)]
    tis = [make_ti(f"t{i}", dag_id="term") for i in range(8)]
    for ti, pid_file in zip(tis, pid_files, strict=True):
        ex.queue_command(ti, spawn_tree_script(pid_file))
    ex.heartbeat()  # 2 workers x 2 threads: four run, four wait on the workers

    def four_running() -> bool:
        return sum(pids_file_complete(f, 2)() for f in pid_files) >= 4

    wait_for(four_running, timeout=60, what="four commands to start")
    runs: list[object] = []
    real_run = client.run
    monkeypatch.setattr(client, "run", lambda *a, **kw: runs.append(a) or real_run(*a, **kw))
    ex.terminate()
    assert runs == []
    pids = [pid for f in pid_files for pid in read_pids(f)]
    wait_for(lambda: not any(map(pid_alive, pids)), timeout=15, what="every process gone")
    events = ex.get_event_buffer()
    assert all(events[ti.key][0] is S.FAILED for ti in tis), events
    assert sum(pids_file_complete(f, 1)() for f in pid_files) == 4  # the others never ran
    wait_for(lambda: client.run_on_scheduler(_airdask_tasks) == [], timeout=15,
             what="Dask to forget them")  # fmt: skip
    assert all(keeper_knows(client, dask_key(ti.key)) is None for ti in tis)  # no outcome


def test_the_notebook_display_shows_workers_and_pool_resources(client: Any, config: Config) -> None:
    ex = DaskExecutor(client=client, config=config)
    assert "pool resources" not in ex._repr_html_()  # not connected yet
    ex.start()
    try:
        text = ex._repr_html_()
        assert ">2</td>" in text and "io=4" in text  # two workers offering io=2 each
    finally:
        ex.end()


def test_running_event_names_the_worker(client: Any, config: Config, tmp_path: Path) -> None:
    from distributed import Event

    ex = DaskExecutor(client=client, config=config)
    ex.start()
    gate = Event(f"gate-{tmp_path.name}", client=client)
    ti = make_ti("blocked")
    ex.queue_command(ti, PythonCommand(_wait_event, gate.name))
    got = events_until(ex, ti.key, S.RUNNING)
    info = next(i for s, i in got if s is S.RUNNING)
    workers = set(client.scheduler_info(n_workers=-1)["workers"])
    assert info.worker in workers and info.kind == "running" and info.started_at is not None
    assert info.external_executor_id.endswith(dask_key(ti.key))
    gate.set()
    state, done = drain(ex, [ti.key])[ti.key]
    assert state is S.SUCCESS and done.worker == info.worker
    ex.end()


def test_a_quick_attempt_is_reported_once_with_its_worker_and_start(
    client: Any, config: Config
) -> None:
    from airdask import runner

    ex = DaskExecutor(client=client, config=config)
    ex.start()
    ti = make_ti("quick")
    ex.queue_command(ti, PythonCommand(say, "quick"))
    got = events_until(ex, ti.key, S.SUCCESS)
    info = got[-1][1]
    workers = set(client.scheduler_info(n_workers=-1)["workers"])
    assert info.worker in workers and info.started_at is not None and info.hostname
    ran = (info.ended_at - info.started_at).total_seconds()
    # (the queued event may have been replaced in the buffer by the outcome)
    if ran < runner.START_REPORT_DELAY:  # not guaranteed on a loaded machine
        started = client.get_events(runner.STARTED_TOPIC)
        assert not [m for _, m in started if m["key"] == dask_key(ti.key)]
        assert S.RUNNING not in [s for s, _ in got]
    ex.end()


def test_two_executors_on_one_client_each_get_their_events(
    client: Any, config: Config, tmp_path: Path
) -> None:
    from distributed import Event

    first = DaskExecutor(client=client, config=config)
    second = DaskExecutor(client=client, config=config)
    first.start()
    second.start()

    def running_of(ex: DaskExecutor, tag: str) -> Any:
        gate = Event(f"gate-{tmp_path.name}-{tag}", client=client)
        ti = make_ti(tag)
        ex.queue_command(ti, PythonCommand(_wait_event, gate.name))
        events_until(ex, ti.key, S.RUNNING)
        gate.set()
        return drain(ex, [ti.key])[ti.key]

    assert running_of(first, "one")[0] is S.SUCCESS
    second.sync()  # idle, yet it drains (and drops) the events of the first one's attempts
    assert second._track._finished.empty()
    assert running_of(second, "two")[0] is S.SUCCESS
    first.end()  # must not take the second executor's subscriptions with it
    assert running_of(second, "three")[0] is S.SUCCESS
    second.end()


def _wait_event(name: str, say_first: str | None = None) -> None:
    from distributed import Event, get_client

    if say_first is not None:
        print(say_first, flush=True)
    if not Event(name, client=get_client()).wait(timeout=60):
        raise TimeoutError("gate never opened")


def test_no_result_is_fetched_and_a_long_log_is_taken_from_its_worker(
    client: Any, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airdask import runner

    ex = DaskExecutor(client=client, config=config)
    ex.start()
    gathered: list[str] = []
    real_gather = client.gather

    def counting_gather(futures: Any, *args: Any, **kwargs: Any) -> Any:
        gathered.extend(f.key for f in futures)
        return real_gather(futures, *args, **kwargs)

    monkeypatch.setattr(client, "gather", counting_gather)
    small, large = make_ti("small"), make_ti("large")
    big_text = "".join(f"line {i:06d}\n" for i in range(runner.PUSH_LOG_MAX // 4))
    ex.queue_command(small, PythonCommand(say, "short"))
    ex.queue_command(large, PythonCommand(say, big_text))
    events = drain(ex, [small.key, large.key])
    assert events[small.key][0] is S.SUCCESS and events[large.key][0] is S.SUCCESS
    ex.end()
    folder = config.logging.base_log_folder
    assert "short" in read_log(folder, small.key)[1]
    large_log = "\n".join(read_log(folder, large.key)[1]) + "\n"
    assert big_text in large_log  # all of it, not the tail
    assert gathered == []


def test_tasks_name_the_runner_and_a_worker_that_lost_it_fetches_it(
    client: Any, config: Config
) -> None:
    import cloudpickle

    ex = DaskExecutor(client=client, config=config)
    ex.start()
    assert len(cloudpickle.dumps(ex._run_task)) < 200  # by reference; the runner: ~11 KB

    def forget_shipped() -> int:
        import sys

        functions = sys.modules["_airdask_shipped"].functions
        count = len(functions)
        functions.clear()
        return count

    assert all(n >= 1 for n in client.run(forget_shipped).values())
    ti = make_ti("refetched")
    ex.queue_command(ti, PythonCommand(say, "again"))
    state, info = drain(ex, [ti.key])[ti.key]
    assert state is S.SUCCESS, info
    ex.end()


def test_priority_reaches_dask(client: Any, config: Config) -> None:
    ex = DaskExecutor(client=client, config=config)
    ex.start()
    ti = make_ti("prio")
    ex.queue_command(ti, PythonCommand(wait_for_event, "prio-gate"), priority=42)
    ex.heartbeat()
    name = dask_key(ti.key)

    def priority(dask_scheduler: Any, name: str = name) -> Any:
        ts = dask_scheduler.tasks.get(name)
        return None if ts is None else ts.priority

    try:  # while it waits on the gate (submission is asynchronous: wait for it to arrive)
        wait_for(lambda: client.run_on_scheduler(priority) is not None, timeout=30,
                 what="the task to reach the scheduler")  # fmt: skip
        assert client.run_on_scheduler(priority)[0] == -42
    finally:
        Event("prio-gate", client=client).set()
    drain(ex, [ti.key])
    ex.end()


def test_queue_and_pool_routing(client: Any, config: Config) -> None:
    ex = DaskExecutor(client=client, config=config)
    ex.start()
    io_ti = make_ti("io", pool="io", pool_slots=2)
    big = make_ti("big", pool="io", pool_slots=3)
    gpu = make_ti("gpu", queue="gpu")
    other = make_ti("other", pool="nobody_offers")
    ex.queue_command(io_ti, PythonCommand(wait_for_event, "io-gate"))
    ex.queue_command(big, ["true"])
    ex.queue_command(gpu, ["true"], queue="gpu")
    ex.queue_command(other, ["true"])
    ex.heartbeat()
    name = dask_key(io_ti.key)

    def resources(dask_scheduler: Any, name: str = name) -> Any:
        ts = dask_scheduler.tasks.get(name)
        return None if ts is None else ts.resource_restrictions

    try:  # while it waits
        wait_for(lambda: client.run_on_scheduler(resources) is not None, timeout=30,
                 what="the task to reach the scheduler")  # fmt: skip
        assert client.run_on_scheduler(resources) == {"io": 2.0}
    finally:
        Event("io-gate", client=client).set()
    events = drain(ex, [io_ti.key, big.key, gpu.key, other.key])
    assert events[io_ti.key][0] is S.SUCCESS
    assert events[other.key][0] is S.SUCCESS  # auto: unconstrained
    state, info = events[gpu.key]
    assert state is S.FAILED and info.kind == "no_worker"
    assert str(info) == "no worker offers queue 'gpu' (workers offer: io=2)"
    state, info = events[big.key]
    assert state is S.FAILED and "needs 3 slots" in str(info)
    ex.end()


def test_strict_pool_policy_fails_with_reason(client: Any, config: Config) -> None:
    strict = config.with_overrides({("dask", "pool_resources"): "strict"})
    ex = DaskExecutor(client=client, config=strict)
    ex.start()
    ti = make_ti("t", pool="nobody_offers")
    ex.queue_command(ti, ["true"])
    state, info = drain(ex, [ti.key])[ti.key]
    assert state is S.FAILED and info.kind == "no_worker"
    assert "no worker offers pool 'nobody_offers'" in str(info) and "strict" in str(info)
    ex.end()


def wait_for_live_line(ex: DaskExecutor, ti: Any, line: str) -> None:
    """Heartbeat until ``line`` shows in the running attempt's log, read live from its worker."""

    def live_has_line() -> bool:
        ex.heartbeat()
        messages, lines = ex.get_task_log(ti, 1)
        return line in lines and messages[0].startswith("live log from worker")

    wait_for(live_has_line, timeout=30, what=f"{line!r} in the live log")


def test_live_log_of_a_running_task_then_from_the_folder(
    client: Any, config: Config, tmp_path: Path
) -> None:
    ex = DaskExecutor(client=client, config=config)
    ex.start()
    flag = tmp_path / "go"
    ti = make_ti("live")
    script = f"echo first-line; while [ ! -e {flag} ]; do sleep 0.05; done; echo second-line"
    ex.queue_command(ti, ["bash", "-c", script])
    wait_for_live_line(ex, ti, "first-line")
    flag.touch()
    assert drain(ex, [ti.key])[ti.key][0] is S.SUCCESS
    messages, lines = ex.get_task_log(ti, 1)
    assert lines[:2] == ["first-line", "second-line"] and messages[0].startswith("log file")
    ex.end()


def test_live_log_of_a_running_callable(client: Any, config: Config, tmp_path: Path) -> None:
    from distributed import Event

    ex = DaskExecutor(client=client, config=config)
    ex.start()
    gate = Event(f"gate-{tmp_path.name}", client=client)
    ti = make_ti("live-py")
    ex.queue_command(ti, PythonCommand(_wait_event, gate.name, "said-before-waiting"))
    wait_for_live_line(ex, ti, "said-before-waiting")
    gate.set()
    assert drain(ex, [ti.key])[ti.key][0] is S.SUCCESS
    ex.end()


def test_revoke_kills_a_running_command(client: Any, config: Config, tmp_path: Path) -> None:
    from proc_support import pid_alive, pids_file_complete, read_pids, spawn_tree_script

    ex = DaskExecutor(client=client, config=config)
    ex.start()
    pids = tmp_path / "pids"
    ti = make_ti("victim")
    ex.queue_command(ti, spawn_tree_script(pids))
    ex.heartbeat()
    wait_for(pids_file_complete(pids, 2), timeout=30, what="the command to start")
    ex.heartbeat()
    ex.get_event_buffer()
    ex.revoke_task(ti=ti)
    assert not ex.has_task(ti)
    wait_for(lambda: not any(map(pid_alive, read_pids(pids))), timeout=15, what="group killed")
    ex.heartbeat()
    assert ti.key not in ex.get_event_buffer()  # revoke reports nothing
    ex.end()


def test_embedded_cluster_offers_the_pools_table(home: Path, config: Config) -> None:
    """The caller reads the pools table (the executor opens no database): the way the CLI
    and the notebook API build an executor."""
    store = Store.from_config(config)
    init_db(store)
    with store.session() as session:
        session.add(Pool(name="io_pool", slots=3))
    store.dispose()
    cfg = config.with_overrides(
        {("dask", "dashboard_address"): "127.0.0.1:0", ("dask", "n_workers"): 1}
    )
    ex = load_executor("DaskExecutor", config=cfg, worker_resources=pool_resources_of(cfg))
    assert isinstance(ex, DaskExecutor)
    ex.start()
    try:
        workers = ex.client.scheduler_info(n_workers=-1)["workers"]
        assert [w["resources"] for w in workers.values()] == [{"io_pool": 3.0}]
        ti = make_ti("t", pool="io_pool", pool_slots=3)
        ex.queue_command(ti, ["true"])
        assert drain(ex, [ti.key])[ti.key][0] is S.SUCCESS
        cluster = ex._conn.cluster if ex._conn else None
        assert cluster is not None
        page = urllib.request.urlopen(f"{ex.dashboard_link.rsplit('/', 1)[0]}/airdask", timeout=30)
        assert page.status == 200  # the embedded cluster installs the airdask page
    finally:
        ex.end()
    assert cluster.status.name == "closed"


def test_a_notebooks_current_client_is_reused(client: Any, config: Config) -> None:
    """With neither address nor client, the process's default Client (a notebook's) is
    used rather than a new embedded cluster, and is left open."""
    from distributed import Client

    with Client(client.scheduler.address) as current:  # becomes the default client
        ex = DaskExecutor(config=config)
        ex.start()
        assert ex.client is current and ex._conn is not None and ex._conn.cluster is None
        ti = make_ti("t")
        ex.queue_command(ti, ["true"])
        assert drain(ex, [ti.key])[ti.key][0] is S.SUCCESS
        ex.end()
        assert current.status == "running"
        opted_out = DaskExecutor(config=config, reuse_current_client=False)
        assert opted_out.reuse_current_client is False


@pytest.fixture(scope="module")
def subprocess_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExternalCluster]:
    with external_cluster(tmp_path_factory.mktemp("ext")) as cl:
        cl.start_worker(resources="gpu=1", nthreads=1)
        cl.start_worker(resources="noairdask=2", nthreads=2, block_airdask=True)
        with Client(cl.address, set_as_default=False) as client:  # the tests list them
            client.wait_for_workers(2, timeout=60)
        yield cl


def attached(
    cluster: ExternalCluster, config: Config, *, offering: str
) -> tuple[DaskExecutor, str]:
    """A started executor on the subprocess cluster, and the worker offering ``offering``."""
    ex = DaskExecutor(cluster.address, config=config)
    ex.start()
    ex.client.wait_for_workers(2, timeout=60)
    workers = ex.client.scheduler_info(n_workers=-1)["workers"]
    return ex, next(a for a, w in workers.items() if w["resources"].get(offering))


def test_attach_by_address_to_subprocess_cluster(
    subprocess_cluster: ExternalCluster, config: Config
) -> None:
    ex, gpu_worker = attached(subprocess_cluster, config, offering="gpu")
    gpu = make_ti("gpu", queue="gpu")
    plain = make_ti("plain")
    ex.queue_command(gpu, ["bash", "-c", "echo on-gpu"], queue="gpu")
    ex.queue_command(plain, ["true"])
    events = drain(ex, [gpu.key, plain.key])
    assert events[gpu.key][0] is S.SUCCESS and events[gpu.key][1].worker == gpu_worker
    assert events[plain.key][0] is S.SUCCESS
    ex.end()
    assert ex.dashboard_link is None


def test_runs_on_a_worker_that_cannot_import_airdask(
    subprocess_cluster: ExternalCluster, config: Config
) -> None:
    ex, blocked = attached(subprocess_cluster, config, offering="noairdask")

    def can_import() -> str:
        try:
            import airdask  # noqa: F401
        except ImportError as exc:
            return f"no: {exc}"
        return "yes"

    assert ex.client.run(can_import, workers=[blocked])[blocked].startswith("no:")
    argv_ti, py_ti = make_ti("argv"), make_ti("py")
    ex.queue_command(argv_ti, [sys.executable, "-c", "print('argv ok')"], queue="noairdask")
    ex.queue_command(py_ti, PythonCommand(say, "python ok"), queue="noairdask")
    events = drain(ex, [argv_ti.key, py_ti.key])
    for ti in (argv_ti, py_ti):
        state, info = events[ti.key]
        assert state is S.SUCCESS, info
        assert info.worker == blocked
    ex.end()  # logs are filed on a background thread; end() waits for them
    assert "python ok" in read_log(config.logging.base_log_folder, py_ti.key)[1]


def forget_runner(client: Any) -> None:
    """Make the Dask scheduler look restarted to the runner: no module, no plugin."""

    def forget(dask_scheduler: Any) -> None:  # nested: shipped by value
        import sys

        sys.modules.pop("_airdask_shipped", None)
        for name in [n for n in dask_scheduler.plugins if n.startswith("airdask-shipped")]:
            dask_scheduler.remove_plugin(name)

    client.run_on_scheduler(forget)


def test_a_scheduler_that_lost_the_runner_gets_it_again(
    subprocess_cluster: ExternalCluster, config: Config
) -> None:
    """What a restarted Dask scheduler looks like to tasks that name the runner by
    reference: no module, no plugin. The attempt fails with that reason and the executor
    installs the runner again, so the retry runs."""
    ex, _ = attached(subprocess_cluster, config, offering="gpu")
    forget_runner(ex.client)
    lost = make_ti("lost")
    ex.queue_command(lost, ["true"])
    state, info = drain(ex, [lost.key])[lost.key]
    assert state is S.FAILED and "deserialization of the task graph" in info.reason
    retry = make_ti("lost", try_number=2)
    ex.queue_command(retry, ["true"])
    state, info = drain(ex, [retry.key])[retry.key]
    assert state is S.SUCCESS, info
    ex.end()


def test_a_failed_install_of_a_lost_runner_loses_no_outcome(
    subprocess_cluster: ExternalCluster, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installing the runner again may fail too (the Dask scheduler busy, say): sync() still
    reports the attempt that found no runner (it must not raise: that stops the scheduler,
    and the outcomes it had taken would be lost), and the next such error installs it."""
    ex, _ = attached(subprocess_cluster, config, offering="gpu")
    forget_runner(ex.client)
    install = ex._install_runner
    tries: list[str] = []

    def failing_once() -> None:
        tries.append("install")
        if len(tries) == 1:
            raise ShippingError("the Dask cluster refused to install the runner: timeout")
        install()

    monkeypatch.setattr(ex, "_install_runner", failing_once)
    for try_number in (1, 2):
        ti = make_ti("unlucky", try_number=try_number)
        ex.queue_command(ti, ["true"])
        state, info = drain(ex, [ti.key])[ti.key]
        assert state is S.FAILED and "deserialization of the task graph" in info.reason
    assert tries == ["install", "install"]
    last = make_ti("unlucky", try_number=3)
    ex.queue_command(last, ["true"])
    assert drain(ex, [last.key])[last.key][0] is S.SUCCESS
    ex.end()


def test_cli_worker_dry_run_uses_pools_and_passes_options_through(
    home: Path, config: Config
) -> None:
    from airdask.executors.dask.cli import dask_group

    store = Store.from_config(config)
    init_db(store)
    with store.session() as session:
        session.add(Pool(name="io_pool", slots=4))
    store.dispose()
    result = CliRunner().invoke(
        dask_group,
        ["worker", "tcp://127.0.0.1:1", "--resources", "gpu=1", "--nthreads", "3", "--dry-run"],
    )
    assert result.exit_code == 0, result.output
    assert "distributed.cli.dask_worker tcp://127.0.0.1:1" in result.output
    assert "--resources gpu=1,io_pool=4 --nthreads 3" in result.output
    bad = CliRunner().invoke(dask_group, ["worker", "tcp://x:1", "--resources", "gpu", "--dry-run"])
    assert bad.exit_code != 0 and "expected NAME=AMOUNT" in bad.output


def test_cli_info_lists_workers_and_resources(
    subprocess_cluster: ExternalCluster, home: Path
) -> None:
    from airdask.executors.dask.cli import dask_group

    result = CliRunner().invoke(dask_group, ["info", subprocess_cluster.address])
    assert result.exit_code == 0, result.output
    assert subprocess_cluster.address in result.output
    assert "gpu=1" in result.output and "dashboard: http" in result.output


def test_cli_group_is_offered_by_the_executor() -> None:
    names = [c.name for c in DaskExecutor.get_cli_commands()]
    assert names == ["dask"]


def test_cli_worker_joins_with_pool_resources(home: Path, config: Config, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    from distributed import Client

    store = Store.from_config(config)
    init_db(store)
    with store.session() as session:
        session.add(Pool(name="io_pool", slots=2))
    store.dispose()
    with external_cluster(tmp_path) as cl:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airdask", "dask", "worker", cl.address,
             "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1"],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            with Client(cl.address, set_as_default=False) as client:
                client.wait_for_workers(1, timeout=60)
                workers = client.scheduler_info(n_workers=-1)["workers"]
                assert [w["resources"] for w in workers.values()] == [{"io_pool": 2.0}]
                assert [w["nthreads"] for w in workers.values()] == [1]
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
