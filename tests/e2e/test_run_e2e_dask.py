"""``airdask run`` end to end on Dask: the embedded LocalCluster (the default with no
configuration) and an external ``dask scheduler``/``dask worker`` cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from airdask.store import DagRun, TaskInstance
from dask_support import external_cluster
from e2e.test_run_e2e import big_dag, store_for
from sched_support import cli
from task_funcs import max_concurrency

pytestmark = pytest.mark.slow

EMBEDDED = {
    "AIRDASK__DASK__DASHBOARD_ADDRESS": "127.0.0.1:0",
    "AIRDASK__DASK__N_WORKERS": "2",
    "AIRDASK__DASK__THREADS_PER_WORKER": "2",
}


def _check_big_run(home: Path, ledger: Path) -> dict[str, TaskInstance]:
    with store_for(home).session() as session:
        assert session.scalars(select(DagRun.state)).one() == "success"
        tis = {ti.task_id: ti for ti in session.scalars(select(TaskInstance))}
    states = {t: ti.state for t, ti in tis.items()}
    assert len(states) == 55 and states.pop("on_failure_only") == "skipped"
    assert set(states.values()) == {"success"}
    assert tis["flaky"].try_number == 2
    assert max_concurrency(str(ledger)) == 2
    ran = [ti for ti in tis.values() if ti.state == "success"]
    assert all(ti.hostname and ti.external_executor_id for ti in ran)
    return tis


@pytest.mark.timeout(180)
def test_run_on_the_embedded_cluster_by_default(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    ledger = tmp_path / "ledger"
    dag_file = big_dag(tmp_path / "big.py", ledger, tmp_path / "marker")
    assert cli("pools", "set", "two", "2", home=home).returncode == 0
    result = cli("run", str(dag_file), home=home, env=EMBEDDED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on DaskExecutor" in result.stdout
    assert "Dask dashboard: http://127.0.0.1:" in result.stdout
    _check_big_run(home, ledger)


@pytest.mark.timeout(240)
def test_run_on_an_external_cluster(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    ledger = tmp_path / "ledger"
    dag_file = big_dag(tmp_path / "big.py", ledger, tmp_path / "marker")
    fails = tmp_path / "fails.py"
    fails.write_text(
        "from airdask.dag import DAG, BashTask\n"
        "with DAG('fails') as dag:\n"
        "    BashTask('a', 'exit 9') >> BashTask('b', 'true')\n"
    )
    with external_cluster(tmp_path) as cluster:
        cluster.start_worker(nthreads=2, resources="two=2")
        cluster.start_worker(nthreads=2, resources="two=2")
        assert cli("pools", "set", "two", "2", home=home).returncode == 0
        result = cli("run", str(dag_file), "--cluster", cluster.address, home=home)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "on DaskExecutor" in result.stdout
        _check_big_run(home, ledger)
        failed = cli("run", str(fails), "--cluster", cluster.address, home=home)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    with store_for(home).session() as session:
        states = dict(
            session.execute(
                select(TaskInstance.task_id, TaskInstance.state).where(
                    TaskInstance.dag_id == "fails"
                )
            ).all()
        )
    assert states == {"a": "failed", "b": "upstream_failed"}
    assert "exit code 9" in failed.stdout


def test_unreachable_cluster_is_a_one_line_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    dag_file = tmp_path / "ok.py"
    dag_file.write_text(
        "from airdask.dag import DAG, BashTask\nwith DAG('ok') as dag:\n    BashTask('a', 'true')\n"
    )
    env = {"AIRDASK__DASK__CONNECT_TIMEOUT": "2"}
    result = cli("run", str(dag_file), "--cluster", "tcp://127.0.0.1:9", home=home, env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot reach the Dask cluster at tcp://127.0.0.1:9")
    assert lines[0].endswith("after 2 s")
    with store_for(home).session() as session:
        assert session.scalars(select(DagRun)).all() == []


@pytest.mark.timeout(180)
def test_tasks_logs_of_a_running_attempt_come_from_the_executor(tmp_path: Path) -> None:
    from sched_support import LIVE_TI, live_task, wait_for_log_line

    home = tmp_path / "home"
    with external_cluster(tmp_path) as cluster:
        cluster.start_worker(nthreads=2)
        env = {"AIRDASK__CORE__EXECUTOR": "DaskExecutor",
               "AIRDASK__DASK__CLUSTER_ADDRESS": cluster.address}  # fmt: skip
        with live_task(home, env, tmp_path / "release"):
            live = wait_for_log_line(home, env, "hello-live")
            assert "live log from worker" in live.stderr
            header, *output = live.stdout.splitlines()  # the header shows the whole command
            assert header.startswith("[airdask] command: bash -c 'echo hello-live;")
            assert output == ["hello-live"]
    done = cli("tasks", "logs", *LIVE_TI, home=home)
    assert "hello-live" in done.stdout and "bye" in done.stdout
    assert "log file:" in done.stderr
