"""``airdask scheduler`` started while its Dask cluster is down waits for it (a cluster that
restarts is no reason for the daemon to exit), and gives up after
``[scheduler] executor_start_timeout`` with the one-line error of an unreachable cluster."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from airdask.config import load_config
from airdask.store import Store
from proc_support import wait_for
from sched_support import AIRDASK, cli, cli_env, run_state

DAG_FILE = """
from airdask.dag import DAG, BashTask
with DAG("waits") as dag:
    BashTask("hello", "echo hello")
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(180)
def test_scheduler_waits_for_a_cluster_that_comes_up_late(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "waits.py").write_text(DAG_FILE)
    address = f"tcp://127.0.0.1:{_free_port()}"
    env = {"AIRDASK__DASK__CONNECT_TIMEOUT": "0.5"}
    assert cli("dags", "trigger", "waits", "--run-id", "r1", home=home, env=env).returncode == 0
    errors = tmp_path / "scheduler.err"
    dask_bin = Path(sys.executable).parent / "dask"
    started: list[subprocess.Popen[bytes]] = []
    with errors.open("wb") as err:
        scheduler = subprocess.Popen(
            [*AIRDASK, "scheduler", "--cluster", address], env=cli_env(home, env), stderr=err
        )
    store = Store.from_config(load_config({"AIRDASK_HOME": str(home)}))
    try:
        wait_for(lambda: "trying again in" in errors.read_text(), timeout=60, what="a retry")
        assert scheduler.poll() is None, errors.read_text()
        port = address.rsplit(":", 1)[1]
        for argv in (
            [str(dask_bin), "scheduler", "--host", "127.0.0.1", "--port", port,
             "--no-dashboard"],
            [str(dask_bin), "worker", address, "--nthreads", "1", "--no-dashboard"],
        ):  # fmt: skip
            started.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        wait_for(lambda: run_state(store, "waits", "r1") == "success", timeout=90, what="run")
        scheduler.send_signal(signal.SIGTERM)
        assert scheduler.wait(timeout=60) == 0, errors.read_text()
        assert f"cannot connect to Dask scheduler {address}" in errors.read_text()
    finally:
        scheduler.kill()
        for proc in started:
            proc.kill()
            proc.wait(timeout=30)
        store.dispose()


@pytest.mark.timeout(60)
def test_scheduler_gives_up_after_executor_start_timeout(tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    env = {
        "AIRDASK__DASK__CONNECT_TIMEOUT": "0.5",
        "AIRDASK__SCHEDULER__EXECUTOR_START_TIMEOUT": "2",
    }
    done = cli("scheduler", "--cluster", address, home=tmp_path / "home", env=env, timeout=50)
    assert done.returncode != 0
    assert "trying again in" in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot reach the Dask cluster at {address}"), done.stderr
