"""The embedded cluster's Dask scheduler in a process of its own: it serves airdask's
executor and dashboard page, carries the parent's Dask settings, ignores a terminal's
Ctrl-C, reports a start that fails, and never outlives its parent."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import dask
import pytest

from airdask.config import Config
from airdask.executors.dask import DaskExecutor
from airdask.executors.dask.embedded import SchedulerProcess, embedded_cluster
from executor_support import drain, make_ti
from proc_support import pid_alive, wait_for

pytestmark = pytest.mark.timeout(120)


def _scheduler_pid(dask_scheduler: Any) -> int:
    return os.getpid()


def _allowed_failures(dask_scheduler: Any) -> int:
    return int(dask_scheduler.allowed_failures)


def _marker(dask_scheduler: Any) -> Any:
    return dask.config.get("airdask-test-marker", None)


def test_the_embedded_scheduler_runs_apart_and_stops_with_the_executor(config: Config) -> None:
    cfg = config.with_overrides(
        {
            ("dask", "dashboard_address"): "127.0.0.1:0",
            ("dask", "n_workers"): 1,
            ("dask", "allowed_failures"): 3,
        }
    )
    with dask.config.set({"airdask-test-marker": "from the parent"}):
        ex = DaskExecutor(config=cfg)
        ex.start()
    try:
        pid = ex.client.run_on_scheduler(_scheduler_pid)
        assert pid != os.getpid() and pid_alive(pid)
        assert ex.client.run_on_scheduler(_allowed_failures) == 3
        assert ex.client.run_on_scheduler(_marker) == "from the parent"
        os.kill(pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
        ti = make_ti("t")
        ex.queue_command(ti, ["true"])
        assert drain(ex, [ti.key])[ti.key][0].value == "success"
        assert ex.dashboard_link is not None
        page = urllib.request.urlopen(f"{ex.dashboard_link.rsplit('/', 1)[0]}/airdask", timeout=30)
        assert page.status == 200
    finally:
        ex.end()
    wait_for(lambda: not pid_alive(pid), timeout=30, what="the Dask scheduler to exit")


def test_the_old_way_keeps_the_scheduler_in_this_process(config: Config) -> None:
    cfg = config.with_overrides(
        {
            ("dask", "scheduler_process"): False,
            ("dask", "dashboard_address"): "",
            ("dask", "n_workers"): 1,
        }
    )
    cluster = embedded_cluster(cfg)
    try:
        from distributed import Client

        with Client(cluster, set_as_default=False) as client:
            assert client.run_on_scheduler(_scheduler_pid) == os.getpid()
    finally:
        cluster.close()


def test_a_scheduler_that_cannot_start_says_so() -> None:
    async def start() -> None:
        await SchedulerProcess(options={"no_such_option": 1}).start()

    # Not asyncio.run(): it leaves this thread without a current event loop, which later
    # tests in the same process (tornado's synchronous websocket client) need.
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="exited with code 1 before it listened"):
            loop.run_until_complete(start())
    finally:
        loop.close()


PARENT = textwrap.dedent(
    """
    import os, sys
    from airdask.config import load_config
    from airdask.executors.dask.embedded import embedded_cluster
    from distributed import Client

    overrides = {("dask", "dashboard_address"): "", ("dask", "n_workers"): 1}
    config = load_config().with_overrides(overrides)
    cluster = embedded_cluster(config)
    client = Client(cluster, set_as_default=False)
    print(client.run_on_scheduler(lambda dask_scheduler: os.getpid()), flush=True)
    sys.stdin.read()  # until the test kills this process
    """
)


def test_the_scheduler_process_dies_with_its_parent(home: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as parent:
        try:
            assert parent.stdout is not None
            pid = int(parent.stdout.readline())
            assert pid_alive(pid)
            parent.kill()  # SIGKILL: no clean-up code of the parent runs
            parent.wait(timeout=30)
        finally:
            if parent.poll() is None:
                parent.kill()
    wait_for(lambda: not pid_alive(pid), timeout=30, what="the orphaned Dask scheduler to exit")


def test_a_dead_embedded_scheduler_is_replaced_and_its_attempts_reported_lost(
    config: Config, tmp_path: Path
) -> None:
    """The Dask scheduler process can die alone (the OOM killer's pick): the executor
    starts a new embedded cluster at once, reports the attempts in flight as outcome
    unknown (so the scheduler retries them without charging a try), and runs on."""
    cfg = config.with_overrides({("dask", "dashboard_address"): "", ("dask", "n_workers"): 1})
    ex = DaskExecutor(config=cfg)
    ex.start()
    try:
        started = tmp_path / "started"
        slow = make_ti("slow")
        ex.queue_command(slow, ["sh", "-c", f"touch {started}; exec sleep 120"])

        def running() -> bool:
            ex.heartbeat()
            return started.exists()

        wait_for(running, timeout=60, what="the attempt to start")
        old = ex.client.run_on_scheduler(_scheduler_pid)
        os.kill(old, signal.SIGKILL)
        state, info = drain(ex, [slow.key], timeout=60)[slow.key]
        assert state.value == "failed" and info.kind == "connection_lost", info
        new = ex.client.run_on_scheduler(_scheduler_pid)
        assert new != old and pid_alive(new)
        after = make_ti("after")
        ex.queue_command(after, ["true"])
        assert drain(ex, [after.key])[after.key][0].value == "success"
    finally:
        ex.end()
