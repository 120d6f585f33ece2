"""LocalDaskExecutor: the local queue runs on a LocalExecutor, everything else on Dask."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from airdask import PythonCommand
from airdask.config import Config
from airdask.executors.dask import DaskExecutor
from airdask.executors.local_dask import LocalDaskExecutor
from airdask.state import TaskInstanceState
from dask_support import local_cluster
from executor_support import drain, make_ti
from proc_support import pid_alive, pids_file_complete, read_pids, spawn_tree_script, wait_for

S = TaskInstanceState
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def where_am_i(path: str, name: str, gate: str | None = None) -> None:
    """Record whether this runs inside a Dask worker; optionally wait for a Dask Event."""
    try:
        from distributed import Event, get_client, get_worker

        get_worker()
        kind = "dask"
    except ValueError:
        kind = "local"
    if gate:
        Event(gate, client=get_client()).wait(timeout=60)
    with open(path, "a") as fh:
        fh.write(f"{kind} {name} {os.getpid()}\n")


def places(path: Path) -> dict[str, str]:
    return {line.split()[1]: line.split()[0] for line in path.read_text().splitlines()}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with local_cluster(n_workers=2, threads=2) as c:
        yield c


@pytest.fixture
def executor(cluster: Any, config: Config) -> Iterator[LocalDaskExecutor]:
    ex = LocalDaskExecutor(cluster.scheduler_address, config=config, parallelism=8)
    ex.start()
    yield ex
    ex.terminate()


def test_routes_by_queue(executor: LocalDaskExecutor, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    local, remote = make_ti("local", queue="local"), make_ti("remote")
    gpu = make_ti("gpu", queue="gpu")
    executor.queue_command(local, PythonCommand(where_am_i, str(ledger), "local"), queue="local")
    executor.queue_command(remote, PythonCommand(where_am_i, str(ledger), "remote"))
    executor.queue_command(gpu, ["true"], queue="gpu")
    events = drain(executor, [local.key, remote.key, gpu.key])
    assert events[local.key][0] is S.SUCCESS and events[remote.key][0] is S.SUCCESS
    assert places(ledger) == {"local": "local", "remote": "dask"}
    state, info = events[gpu.key]
    assert state is S.FAILED and info.kind == "no_worker"
    messages, _ = executor.get_task_log(local, 1)
    assert messages[0].startswith("log file")  # the LocalExecutor's log folder
    assert not executor.running and not executor.local_executor.running
    assert not executor.dask_executor.running


def test_terminate_kills_both_sides(executor: LocalDaskExecutor, tmp_path: Path) -> None:
    files = {"local": tmp_path / "local", "default": tmp_path / "dask"}
    tis = {q: make_ti(f"t_{q}", queue=q) for q in files}
    for queue, ti in tis.items():
        executor.queue_command(ti, spawn_tree_script(files[queue]), queue=queue)
    executor.heartbeat()
    for path in files.values():
        wait_for(pids_file_complete(path, 2), timeout=30, what=f"{path.name} to start")
    executor.terminate()
    pids = [p for path in files.values() for p in read_pids(path)]
    wait_for(lambda: not any(map(pid_alive, pids)), timeout=15, what="every process gone")
    events = executor.get_event_buffer()
    assert {k for k, (s, _) in events.items() if s is S.FAILED} == {ti.key for ti in tis.values()}
    assert not executor.running


def test_adopts_dask_attempts_and_returns_local_ones(
    cluster: Any, config: Config, tmp_path: Path
) -> None:
    from distributed import Client, Event

    ledger, gate_name = tmp_path / "ledger", f"gate-{tmp_path.name}"
    first = DaskExecutor(cluster.scheduler_address, config=config, queued_report_seconds=0)
    first.start()
    remote = make_ti("remote")
    first.queue_command(remote, PythonCommand(where_am_i, str(ledger), "remote", gate_name))
    first.trigger_tasks(1)
    remote.external_executor_id = first.get_event_buffer()[remote.key][1].external_executor_id
    local = make_ti("local", queue="local")
    local.external_executor_id = "whatever"
    second = LocalDaskExecutor(cluster.scheduler_address, config=config)
    second.start()
    try:
        left = second.try_adopt_task_instances([remote, local])
        assert [ti.task_id for ti in left] == ["local"]
        assert second.has_task(remote)
        with Client(cluster, set_as_default=False) as client:
            Event(gate_name, client=client).set()
        state, _ = drain(second, [remote.key])[remote.key]
        assert state is S.SUCCESS
        first.end()
        assert [name for _, name, _ in read_ledger_lines(ledger)] == ["remote"]  # ran once
    finally:
        second.end()


def read_ledger_lines(path: Path) -> list[tuple[str, str, str]]:
    rows = [tuple(line.split()) for line in path.read_text().splitlines()]
    return [(r[0], r[1], r[2]) for r in rows]


def test_end_waits_for_both_sides(executor: LocalDaskExecutor, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    tis = [make_ti("a", queue="local"), make_ti("b")]
    for ti in tis:
        executor.queue_command(
            ti, PythonCommand(where_am_i, str(ledger), ti.task_id), queue=ti.queue
        )
    executor.heartbeat()
    executor.end()
    events = executor.get_event_buffer()
    assert {k for k, (s, _) in events.items() if s is S.SUCCESS} == {ti.key for ti in tis}
    assert places(ledger) == {"a": "local", "b": "dask"}
