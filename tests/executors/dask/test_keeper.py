"""The keeper (executors/dask/keeper.py) on a real cluster: what it does to airdask's
graphs and to nobody else's, what it reports, and what it keeps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, Event

from airdask import PythonCommand, runner
from airdask.commands import build_spec
from airdask.config import Config
from airdask.executors.dask import DaskExecutor
from airdask.executors.dask.keeper import KEEPER_NAME, KEEPER_PREFIX, Keeper
from airdask.state import TaskInstanceKey, TaskInstanceState
from dask_support import local_cluster
from executor_support import drain, make_ti
from proc_support import pid_alive, pids_file_complete, read_pids, spawn_tree_script, wait_for
from task_funcs import wait_for_event

S = TaskInstanceState


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with local_cluster(n_workers=1, threads=2) as c:
        yield c


@pytest.fixture
def client(cluster: Any) -> Iterator[Client]:
    with Client(cluster, set_as_default=False) as c:
        yield c


def wanted_by(client: Client, key: str) -> list[str] | None:
    def who(dask_scheduler: Any, key: str = key) -> list[str] | None:
        ts = dask_scheduler.tasks.get(key)
        return None if ts is None else sorted(cs.client_key for cs in ts.who_wants)

    return client.run_on_scheduler(who)  # type: ignore[no-any-return]


def test_an_airdask_attempt_is_wanted_by_fire_and_forget_only(
    client: Client, config: Config
) -> None:
    ex = DaskExecutor(client=client, config=config)
    ti = make_ti("held", dag_id="keeper")
    ex.queue_command(ti, PythonCommand(wait_for_event, "keeper-gate"))
    ex.heartbeat()
    name = build_spec(ti.key, ["true"], log_root=None, return_log=True)["key"]
    try:
        wait_for(lambda: wanted_by(client, name) is not None, timeout=30, what="the task")
        assert wanted_by(client, name) == ["fire-and-forget"]  # not the submitting client
    finally:
        Event("keeper-gate", client=client).set()
    assert drain(ex, [ti.key])[ti.key][0] is S.SUCCESS
    ex.end()


def test_other_graphs_are_left_alone(client: Client) -> None:
    client.register_plugin(Keeper(), name=KEEPER_NAME)  # as an executor would
    future = client.submit(sum, [1, 2], key="not-airdask", pure=False)
    assert future.result(timeout=30) == 3
    assert wanted_by(client, "not-airdask") == [client.id]  # a result its client holds


def test_an_attempt_dropped_by_someone_else_is_reported_and_its_command_killed(
    client: Client, config: Config, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pids"
    ex = DaskExecutor(client=client, config=config)
    ti = make_ti("dropped", dag_id="keeper")
    ex.queue_command(ti, spawn_tree_script(pid_file))
    ex.heartbeat()
    wait_for(pids_file_complete(pid_file, 2), timeout=30, what="the command to start")
    name = build_spec(ti.key, ["true"], log_root=None, return_log=True)["key"]

    def cancel_by_hand(dask_scheduler: Any, name: str = name) -> None:
        dask_scheduler.stimulus_cancel(keys=[name], client="fire-and-forget", force=True,
                                       reason="by hand", msg="someone else's")  # fmt: skip

    client.run_on_scheduler(cancel_by_hand)
    state, info = drain(ex, [ti.key])[ti.key]
    assert state is S.FAILED and info.kind == "killed"
    assert "dropped by Dask before it finished" in str(info)
    wait_for(lambda: not any(map(pid_alive, read_pids(pid_file))), timeout=15,
             what="the worker plugin to kill the command")  # fmt: skip
    ex.end()


def test_kept_copies_are_bounded_by_count_and_age() -> None:
    keeper = Keeper(ttl=3600, max_kept=2)
    for key in ("a", "b", "c"):
        keeper.log_event(runner.FINISHED_TOPIC, {"key": key, "state": "success"})
    keeper.log_event("another-topic", {"key": "d"})
    keeper.log_event(runner.FINISHED_TOPIC, {"key": "b", "state": "failed"})  # a rerun's
    assert list(keeper.kept) == ["b", "c"]
    assert keeper.kept["b"][1]["state"] == "success"  # the first outcome is the outcome
    keeper.ack(["b", "unknown"])
    assert list(keeper.kept) == ["c"]
    aged = Keeper(ttl=0.0)
    aged.log_event(runner.FINISHED_TOPIC, {"key": "x"})
    aged.log_event(runner.FINISHED_TOPIC, {"key": "y"})
    assert list(aged.kept) == ["y"]  # x expired when y came


def test_an_unacknowledged_outcome_waits_in_the_keeper(client: Client, config: Config) -> None:
    ex = DaskExecutor(client=client, config=config)
    ti = make_ti("kept", dag_id="keeper", try_number=1)
    ex.queue_command(ti, ["true"])
    assert drain(ex, [ti.key])[ti.key][0] is S.SUCCESS  # reported, not yet acknowledged
    name = build_spec(ti.key, ["true"], log_root=None, return_log=True)["key"]
    kept = client.sync(client.scheduler.airdask_lookup, keys=[name])[name]
    assert kept["outcome"]["state"] == "success"
    ex.heartbeat()  # the next heartbeat: the caller recorded it
    wait_for(lambda: client.sync(client.scheduler.airdask_lookup, keys=[name])[name] is None,
             timeout=10, what="the acknowledgement")  # fmt: skip
    ex.end()
    assert TaskInstanceKey("keeper", "kept", "run1", 1) == ti.key


def test_an_outcome_end_harvests_stays_in_the_keeper(client: Client, config: Config) -> None:
    """end() acknowledges what was recorded before it, not the outcomes it harvests itself:
    the caller records those only after end() returns, and a scheduler that dies first (or
    cannot reach its database) leaves them for its successor to adopt (ADR 0003)."""
    ex = DaskExecutor(client=client, config=config)
    ti = make_ti("harvested-by-end", dag_id="keeper", try_number=1)
    ex.queue_command(ti, PythonCommand(wait_for_event, "end-gate"))
    ex.heartbeat()  # submitted; it cannot finish before the gate opens
    name = build_spec(ti.key, ["true"], log_root=None, return_log=True)["key"]
    try:
        Event("end-gate", client=client).set()
        ex.end()  # waits for it and reports it
        assert ex.get_event_buffer()[ti.key][0] is S.SUCCESS
        kept = client.sync(client.scheduler.airdask_lookup, keys=[name])[name]
        assert kept is not None and kept["outcome"]["state"] == "success"
    finally:
        client.sync(client.scheduler.airdask_ack, keys=[name])  # as the recording caller


def _seed_old_keeper(dask_scheduler: Any) -> None:
    old = dask_scheduler.plugins["airdask-keeper-1"]
    old.kept["old-attempt"] = (time.monotonic(), {"key": "old-attempt", "state": "success"})
    old.live["old-running"] = "old-client"


def _old_keeper_holds(dask_scheduler: Any) -> list[int]:
    old = dask_scheduler.plugins["airdask-keeper-1"]
    return [len(old.live), len(old.kept)]


def _keepers(dask_scheduler: Any) -> list[str]:
    return sorted(name for name in dask_scheduler.plugins if name.startswith(KEEPER_PREFIX))


@pytest.mark.timeout(120)
def test_an_older_keeper_is_taken_over_and_left_holding_nothing(config: Config) -> None:
    """A long-lived Dask scheduler that an older airdask used keeps its keeper: the new one
    takes over its copies and its attempts in flight (nobody could reach them: its handlers
    are the new keeper's now), and it keeps no copy of any later outcome."""
    with (
        local_cluster(n_workers=1, threads=1) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        client.register_plugin(Keeper(), name="airdask-keeper-1")
        client.run_on_scheduler(_seed_old_keeper)
        ex = DaskExecutor(client=client, config=config)
        ex.start()
        try:
            assert client.run_on_scheduler(_keepers) == ["airdask-keeper-1", KEEPER_NAME]
            found = client.sync(client.scheduler.airdask_lookup, keys=["old-attempt"])
            assert found["old-attempt"]["outcome"]["state"] == "success"
            assert client.sync(client.scheduler.airdask_keeper_info) == {"live": 1, "kept": 1}
            ti = make_ti("after_the_upgrade", dag_id="keeper")
            ex.queue_command(ti, ["true"])
            assert drain(ex, [ti.key])[ti.key][0] is S.SUCCESS
            assert client.run_on_scheduler(_old_keeper_holds) == [0, 0]
        finally:
            ex.end()


def test_start_returns_once_the_scheduler_has_the_subscriptions(
    client: Client, config: Config
) -> None:
    """The keeper says whether the scheduler sends a client a topic's events; an executor's
    start() waits for its own subscriptions (a lookup on another connection could overtake
    them, and an attempt adopted then finish unseen)."""
    from airdask.executors.dask.executor import TOPICS
    from airdask.executors.dask.tracking import confirm_subscribed

    ex = DaskExecutor(client=client, config=config)
    ex.start()
    try:
        ask = client.scheduler.airdask_subscribed
        assert client.sync(ask, topics=TOPICS, subscriber=client.id) is True
        assert client.sync(ask, topics=TOPICS, subscriber="nobody") is False
        assert client.sync(ask, topics=[*TOPICS, "no-such-topic"], subscriber=client.id) is False
        assert confirm_subscribed(client, TOPICS, timeout=5)
    finally:
        ex.end()


def test_run_pushed_runs_the_attempt_and_returns_nothing(tmp_path: Path) -> None:
    """What DaskExecutor ships: run_task, with no outcome left as the Dask task's result."""
    ledger = tmp_path / "ledger"
    spec = build_spec(TaskInstanceKey("d", "t", "r"), ["bash", "-c", f"echo ran >> {ledger}"],
                      log_root=None, return_log=True)  # fmt: skip
    assert runner.run_pushed(spec) is None
    assert ledger.read_text() == "ran\n"
