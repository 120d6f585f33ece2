"""cluster/local scripts and cluster/tls/make-certs.sh: a real scheduler and real workers,
attached to by a Client, ``airdask dask info`` and the DaskExecutor."""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

import pytest
from distributed import Client

from airdask.config import load_config
from airdask.executors import load_executor
from airdask.state import TaskInstanceState as S
from airdask.store import Pool, Store, TaskInstance, init_db
from cluster_support import (
    START,
    STOP,
    ScriptCluster,
    local_cluster,
    make_certs,
    script_cluster,
    script_env,
)
from executor_support import drain
from proc_support import pid_alive

__all__ = ["script_cluster"]  # the fixture, for pytest

pytestmark = pytest.mark.timeout(240)


def _add_pool(name: str, slots: int) -> None:
    store = Store.from_config(load_config())
    init_db(store, default_pool_slots=8)
    with store.session() as session:
        session.add(Pool(name=name, slots=slots))
    store.dispose()


def test_scripts_start_workers_offering_pools_and_stop_them(home: Path, tmp_path: Path) -> None:
    _add_pool("gpu", 2)
    with local_cluster(tmp_path, workers=2, resources="scratch=3") as cluster:
        pids = cluster.pids()
        assert set(pids) == {"scheduler", "worker-1", "worker-2"}
        with Client(cluster.address, timeout=30) as client:
            info = client.scheduler_info(n_workers=-1)["workers"]
            assert sorted(w["name"] for w in info.values()) == ["worker-1", "worker-2"]
            for worker in info.values():
                assert worker["resources"] == {"gpu": 2, "scratch": 3}
        page = cluster.dashboard.replace("/status", "/airdask")
        with urllib.request.urlopen(page, timeout=30) as response:
            assert response.status == 200  # the scheduler runs with the airdask preload
    for name, pid in pids.items():
        assert not pid_alive(pid), f"{name} (pid {pid}) still running after stop-cluster.sh"
    assert not (cluster.state_dir / "scheduler.json").exists()
    assert (cluster.state_dir / "logs" / "worker-1.log").exists()  # logs are kept


def test_dask_executor_attaches_to_the_script_cluster(
    script_cluster: ScriptCluster, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in script_cluster.env.items():
        monkeypatch.setenv(name, value)
    executor = load_executor("DaskExecutor", config=load_config())
    executor.start()
    try:
        ti = TaskInstance(dag_id="attach", task_id="hello", run_id="r1", try_number=1)
        executor.queue_command(ti, ["bash", "-c", "echo attached"], priority=1)
        state, info = drain(executor, [ti.key])[ti.key]
    finally:
        executor.end()
    assert state is S.SUCCESS, info


def test_tls_cluster_needs_the_certificates(home: Path, tmp_path: Path) -> None:
    with local_cluster(tmp_path, workers=1, tls=True) as cluster:
        assert cluster.address.startswith("tls://127.0.0.1:")
        certs = cluster.tls_dir
        assert certs is not None
        for role in ("scheduler", "worker", "client"):
            text = subprocess.run(
                ["openssl", "x509", "-in", str(certs / f"{role}.pem"), "-noout", "-text"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text
        with Client(cluster.address, security=cluster.security(), timeout=30) as client:
            assert len(client.scheduler_info(n_workers=-1)["workers"]) == 1
            assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
        with pytest.raises((OSError, TypeError, ValueError)):
            Client(cluster.address.replace("tls://", "tcp://"), timeout=3)
        shown = subprocess.run(
            ["airdask", "dask", "info"],
            env=script_env(cluster.env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert "worker-1" in shown.stdout and "tls://" in shown.stdout


def test_script_errors_are_clear(home: Path, tmp_path: Path) -> None:
    env = script_env()
    bad = subprocess.run([str(START), "--wrokers", "2"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option '--wrokers'" in bad.stderr
    bad = subprocess.run([str(START), "--workers", "two"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "--workers must be a non-negative integer" in bad.stderr
    empty = tmp_path / "empty-certs"
    empty.mkdir()
    bad = subprocess.run(
        [str(START), "--state-dir", str(tmp_path / "s"), "--tls", str(empty)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "ca.pem missing" in bad.stderr
    assert not list((tmp_path / "s" / "pids").glob("*.pid"))  # nothing was started
    stop = subprocess.run(
        [str(STOP), "--state-dir", str(tmp_path / "nowhere")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert stop.returncode == 0 and "nothing to stop" in stop.stdout
    # make-certs keeps existing certificates unless --force.
    certs = make_certs(tmp_path / "certs")
    before = (certs / "ca.pem").read_bytes()
    make_certs(certs)
    assert (certs / "ca.pem").read_bytes() == before


def test_a_second_start_on_the_same_state_dir_is_refused(
    script_cluster: ScriptCluster, tmp_path: Path
) -> None:
    again = subprocess.run(
        [str(START), "--state-dir", str(script_cluster.state_dir), "--port", "0"],
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1 and "already running" in again.stderr
    assert all(pid_alive(pid) for pid in script_cluster.pids().values())
