"""``airdask run`` end to end with ``[core] executor = CeleryExecutor`` and a real
``airdask celery worker``: argv and Python tasks, retries, a routed queue, and a queue no
worker consumes (stuck in queued, revoked, failed with a reason naming the queue)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from airdask.store import DagRun, TaskInstance
from celery_support import (
    REDIS_DB,
    Worker,
    broker_settings,
    flush_redis,
    require_broker,
    start_worker,
)
from sched_support import cli
from test_run_e2e import store_for

pytestmark = pytest.mark.slow


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    require_broker("redis")
    flush_redis(REDIS_DB["e2e"])
    options = broker_settings("redis", REDIS_DB["e2e"])
    routed = options["default_queue"] + "-routed"
    started = start_worker(options, tmp_path / "worker", concurrency=3,
                           queues=[options["default_queue"], routed])  # fmt: skip
    yield started
    started.stop()


def _env(worker: Worker, **extra: str) -> dict[str, str]:
    env = {f"AIRDASK__CELERY__{k.upper()}": v for k, v in worker.options.items()}
    env["AIRDASK__CORE__EXECUTOR"] = "CeleryExecutor"
    return {**env, **extra}


@pytest.mark.timeout(180)
def test_a_dag_runs_on_celery_workers(tmp_path: Path, worker: Worker) -> None:
    home = tmp_path / "home"
    home.mkdir()
    marker = tmp_path / "flaky-marker"
    routed = worker.queues[1]
    dag_file = tmp_path / "celery_dag.py"
    dag_file.write_text(
        textwrap.dedent(
            f"""
            from airdask.dag import DAG, BashTask, PythonTask

            def add(a, b):
                print("sum", a + b)

            with DAG("on_celery", default_args={{"retry_delay": 0}}) as dag:
                start = BashTask("start", "echo start")
                fan = [BashTask(f"fan_{{i}}", f"echo fan {{i}}") for i in range(8)]
                flaky = BashTask(
                    "flaky",
                    "if [ -e {marker} ]; then echo second; else touch {marker}; exit 1; fi",
                    retries=1,
                )
                py = PythonTask("py", add, op_args=[2, 3])
                routed = BashTask("routed", "echo routed", queue={routed!r})
                start >> fan + [flaky, py, routed] >> BashTask("join", "echo join")
            """
        )
    )
    result = cli("run", str(dag_file), home=home, env=_env(worker), timeout=150)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on CeleryExecutor" in result.stdout
    with store_for(home).session() as session:
        assert session.scalars(select(DagRun.state)).one() == "success"
        tis = {ti.task_id: ti for ti in session.scalars(select(TaskInstance))}
    assert {ti.state for ti in tis.values()} == {"success"} and len(tis) == 13
    assert tis["flaky"].try_number == 2
    assert all(ti.hostname and len(ti.external_executor_id or "") == 36 for ti in tis.values())
    logs = home / "logs" / "dag_id=on_celery"
    py_log = next(logs.glob("run_id=*/task_id=py/attempt=1.log"))
    assert "sum 5" in py_log.read_text()


@pytest.mark.timeout(180)
def test_a_queue_no_worker_consumes_is_stuck_then_failed_naming_the_queue(
    tmp_path: Path, worker: Worker
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    dag_file = tmp_path / "stuck_dag.py"
    dag_file.write_text(
        "from airdask.dag import DAG, BashTask\n"
        "with DAG('stuck') as dag:\n"
        "    BashTask('ok', 'true')\n"
        "    BashTask('nowhere', 'true', queue='nobody-consumes-this')\n"
    )
    env = _env(
        worker,
        AIRDASK__SCHEDULER__TASK_QUEUED_TIMEOUT="2",
        AIRDASK__SCHEDULER__NUM_STUCK_IN_QUEUED_RETRIES="1",
    )
    result = cli("run", str(dag_file), home=home, env=env, timeout=150)
    assert result.returncode == 1, result.stdout + result.stderr
    with store_for(home).session() as session:
        tis = {ti.task_id: ti for ti in session.scalars(select(TaskInstance))}
    assert tis["ok"].state == "success"
    nowhere = tis["nowhere"]
    assert nowhere.state == "failed" and nowhere.stuck_in_queued_count == 2
    assert "stuck in queued in queue 'nobody-consumes-this'" in (nowhere.reason or "")
