"""The notebook side of airdask: ``airdask.api.run_dag`` and the rich HTML of executors and
DAG runs (real scheduler loop, real SQLite, real subprocesses; a real Dask cluster for the
dashboard link)."""

from __future__ import annotations

import pytest

from airdask.api import DagRunResult, run_dag
from airdask.config import Config
from airdask.dag import DAG, BashTask, PythonTask
from airdask.executors import load_executor
from airdask.scheduler.runs import RunError
from airdask.store import Pool, Store, TaskInstance, init_db


def shout(word: str) -> None:
    print(word.upper())


def small_dag(dag_id: str = "nb") -> DAG:
    with DAG(dag_id) as dag:
        hello = BashTask("hello", "echo hello from bash")
        py = PythonTask("py", shout, op_args=["quiet"])
        bad = BashTask("bad", "echo about to fail; exit 3", pool="tiny")
        last = BashTask("last", "echo done", trigger_rule="all_done")
        hello >> [py, bad] >> last
    return dag


def add_pool(config: Config, name: str, slots: int) -> None:
    store = Store.from_config(config)
    try:
        init_db(store)
        with store.session() as session:
            session.merge(Pool(name=name, slots=slots))
    finally:
        store.dispose()


def test_run_dag_reports_states_tries_reasons_and_logs(config: Config) -> None:
    add_pool(config, "tiny", 1)
    result = run_dag(small_dag(), executor="SequentialExecutor", config=config, timeout=60)
    # ``last`` (all_done) is the only leaf and it succeeded: the run succeeds, as in Airflow.
    assert result.state == "success" and result.succeeded and not result.timed_out
    assert result.counts == {"success": 3, "failed": 1}
    assert result["bad"].reason == "exit code 3" and result["bad"].try_number == 1
    assert result["hello"].duration is not None and result["hello"].end_date is not None
    assert "about to fail" in result.log("bad")
    assert result.log("py").strip().endswith("QUIET")
    assert ("tiny", 1, 1) in result.pools and ("default_pool", 128, 3) in result.pools
    # The same result can be read back for any run in the database.
    again = DagRunResult.load(Store.from_config(config), "nb", result.run_id)
    assert again.counts == result.counts and again.rows() == result.rows()
    with pytest.raises(KeyError, match="no task 'nope'"):
        result["nope"]


def test_run_dag_refuses_an_unknown_pool_before_running_anything(config: Config) -> None:
    with pytest.raises(RunError, match="tiny"):
        run_dag(small_dag(), executor="SequentialExecutor", config=config)


def test_run_dag_timeout_terminates_and_says_so(config: Config) -> None:
    with DAG("slow") as dag:
        BashTask("sleepy", "sleep 30")
    executor = load_executor("LocalExecutor", parallelism=2, config=config)
    result = run_dag(dag, executor=executor, config=config, timeout=1.0)
    assert result.timed_out
    assert result.elapsed is not None and result.elapsed < 20
    assert result["sleepy"].state != "success"


def test_run_result_html_shows_state_counts_link_pools_and_escapes(config: Config) -> None:
    add_pool(config, "tiny", 1)
    result = run_dag(small_dag("nbhtml"), executor="SequentialExecutor", config=config)
    text = result._repr_html_()
    assert result.run_id in text
    assert ">success</span>&nbsp;3" in text and ">failed</span>&nbsp;1" in text
    assert "exit code 3" in text and "tiny" in text and "SequentialExecutor" in text
    assert text.count("<tr>") >= 1 + 4  # header + one row per task
    assert "dashboard: <i>none</i>" in text and "href=" not in text  # no dashboard here


def test_executor_html_counts_queued_running_and_undelivered_events(config: Config) -> None:
    executor = load_executor("SequentialExecutor", config=config)
    ti = TaskInstance(dag_id="d", task_id="t<1>", run_id="r", try_number=1)
    executor.queue_command(ti, ["true"])
    text = executor._repr_html_()
    assert "<b>SequentialExecutor</b>" in text and "busy (1 attempts)" in text
    assert ">queued</span>&nbsp;1" in text
    executor.heartbeat()
    text = executor._repr_html_()
    assert "idle" in text and ">success</span>&nbsp;1" in text  # not yet handed over
    executor.get_event_buffer()
    assert ">success</span>" not in executor._repr_html_()


@pytest.mark.timeout(90)
def test_dask_executor_html_links_the_dashboard_of_a_passed_in_client(
    config: Config,
) -> None:
    from distributed import Client, LocalCluster

    from airdask.executors.dask import DaskExecutor

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        executor = DaskExecutor(client=client, config=config)
        assert "href=" not in executor._repr_html_()  # not started: no dashboard yet
        with DAG("dask_html") as dag:
            BashTask("one", "echo one")
        result = run_dag(dag, executor=executor, config=config, timeout=60)
        assert result.succeeded and result.dashboard_link == client.dashboard_link
        assert f'href="{client.dashboard_link}"' in result._repr_html_()
        # run_dag ended the executor but left the notebook's client open and usable.
        assert client.submit(sum, [1, 2]).result(timeout=30) == 3
        executor.start()
        try:
            text = executor._repr_html_()
            assert f'href="{client.dashboard_link}"' in text
            assert cluster.scheduler_address in text
            assert ">workers</th>" in text and ">1</td>" in text
        finally:
            executor.end()
