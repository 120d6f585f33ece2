"""``airdask run`` end to end with ``[core] executor = CeleryExecutor`` and a real
``airdask celery worker``: argv and Python tasks, retries, a routed queue, and a queue no
worker consumes (stuck in queued, revoked, failed with a reason naming the queue)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from airdask.logs.packs import packed_logs
from airdask.store import DagRun, TaskInstance
from celery_support import (
    REDIS_DB,
    Worker,
    broker_settings,
    flush_redis,
    require_broker,
    start_worker,
)
from e2e.test_run_e2e import store_for
from sched_support import cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One worker for the module (each test has its own home and DAG)."""
    require_broker("redis")
    flush_redis(REDIS_DB["e2e"])
    options = broker_settings("redis", REDIS_DB["e2e"])
    routed = options["default_queue"] + "-routed"
    started = start_worker(options, tmp_path_factory.mktemp("worker"), concurrency=3,
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
    [run_logs] = logs.glob("run_id=*")  # harvested logs are packed per run
    assert "sum 5" in packed_logs(str(run_logs))["task_id=py/attempt=1.log"]


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


def test_an_unreachable_broker_is_a_one_line_error(tmp_path: Path) -> None:
    require_broker("redis")  # celery installed; the broker named below is not there
    home = tmp_path / "home"
    home.mkdir()
    dag_file = tmp_path / "ok.py"
    dag_file.write_text(
        "from airdask.dag import DAG, BashTask\nwith DAG('ok') as dag:\n    BashTask('a', 'true')\n"
    )
    env = {"AIRDASK__CORE__EXECUTOR": "CeleryExecutor",
           "AIRDASK__CELERY__BROKER_URL": "redis://:hidden-pw1@127.0.0.1:9/0",
           "AIRDASK__CELERY__OPERATION_TIMEOUT": "2"}  # fmt: skip
    result = cli("run", str(dag_file), home=home, env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot start CeleryExecutor: ") and (
        "cannot reach the Celery broker at redis://:***@127.0.0.1:9/0" in lines[0]
    ), lines[0]
    assert "hidden-pw1" not in result.stdout + result.stderr


ADOPT_DAG = """
from airdask.dag import DAG, BashTask

{step}

with DAG("adopt_celery") as dag:
    start = BashTask("start", "true")
    end = BashTask("end", "true")
    for i in range(3):
        start >> BashTask(f"c{{i}}", step(f"c{{i}}", 4)) >> end
"""


@pytest.mark.timeout(240)
def test_celery_attempts_are_adopted_after_a_scheduler_sigkill(
    tmp_path: Path, worker: Worker
) -> None:
    """The scheduler is SIGKILLed while Celery attempts run; the restarted one adopts them by
    their Celery task ids: every task runs to one success, each command once."""
    import signal
    from collections import Counter

    from airdask.config import load_config
    from airdask.store import Store
    from proc_support import wait_for
    from sched_support import log_events, run_state, scheduler_process, tis_of
    from task_funcs import ledger_step_source, read_ledger

    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    ledger = tmp_path / "ledger"
    (home / "dags" / "adopt_celery.py").write_text(
        ADOPT_DAG.format(step=ledger_step_source(ledger))
    )
    env = _env(
        worker,
        AIRDASK__SCHEDULER__JOB_HEARTBEAT_SEC="0.2",
        AIRDASK__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD="2",
        AIRDASK__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL="0.5",
    )
    trig = cli("dags", "trigger", "adopt_celery", "--run-id", "r1", home=home, env=env)
    assert trig.returncode == 0, trig.stderr
    store = Store.from_config(load_config({"AIRDASK_HOME": str(home)}))

    def started() -> int:
        return sum(1 for kind, _, _ in read_ledger(str(ledger)) if kind == "start")

    first = scheduler_process(home, env)
    try:
        wait_for(lambda: started() >= 3, timeout=90, what="the Celery attempts running")
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    second = scheduler_process(home, env)
    try:
        wait_for(lambda: run_state(store, "adopt_celery", "r1") in ("success", "failed"),
                 timeout=150, what="the run to finish under the restarted scheduler")  # fmt: skip
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    tis = tis_of(store, "adopt_celery", "r1")
    assert {ti.state for ti in tis.values()} == {"success"}
    assert {tis[f"c{i}"].try_number for i in range(3)} == {1}
    successes = Counter(e.task_id for e in log_events(store, "adopt_celery", event="success"))
    assert set(successes.values()) == {1} and len(successes) == 5
    runs = Counter(name for kind, name, _ in read_ledger(str(ledger)) if kind == "start")
    assert runs == {"c0": 1, "c1": 1, "c2": 1}
    adopted = {e.task_id for e in log_events(store, "adopt_celery", event="adopted")}
    assert {"c0", "c1", "c2"} <= adopted
    store.dispose()


@pytest.mark.timeout(180)
def test_tasks_logs_of_a_running_celery_attempt_come_from_its_worker(
    tmp_path: Path, worker: Worker
) -> None:
    from sched_support import LIVE_TI, live_task, wait_for_log_line

    home = tmp_path / "home"
    env = _env(worker)
    with live_task(home, env, tmp_path / "release"):
        live = wait_for_log_line(home, env, "hello-live")
        assert "from its Celery worker" in live.stderr
        assert "bye" not in live.stdout.splitlines()
    done = cli("tasks", "logs", *LIVE_TI, home=home, env=env)
    assert "hello-live" in done.stdout and "bye" in done.stdout
    assert "log file:" in done.stderr
