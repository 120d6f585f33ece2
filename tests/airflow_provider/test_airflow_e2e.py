"""airdask.airflow.DaskExecutor inside a real Apache Airflow 3.3 (tests/airflow_stack.py).

One deployment for the module (building it costs a database migration and five processes):
api-server, dag-processor and scheduler of Airflow, a Dask scheduler and two Dask workers
(w1 offers the queue ``special`` and the pool ``dask_io`` with 2 slots) whose database URL
points at a closed port.
"""

from __future__ import annotations

import collections
import json
import signal
import statistics
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from airdask.logs.packs import packed_logs
from airflow_stack import WORKLOAD_WRITER, AirflowStack, WorkerSpec, leftover_processes
from airflow_venv import VenvError, ensure_venv
from conftest import skip_or_fail
from proc_support import pid_alive, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(300)]

WORKERS = (WorkerSpec("w1", resources={"special": 1, "dask_io": 2}), WorkerSpec("w2"))
DAG_IDS = ("e2e_50", "af_fail", "af_pool", "af_queue", "af_logs", "af_live", "af_nopool",
           "af_slow", "af_victim")  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    try:
        bin_dir = ensure_venv()
    except VenvError as exc:
        skip_or_fail(f"cannot build the Airflow virtualenv: {exc}")
    home = tmp_path_factory.mktemp("airflow-home")
    try:
        deployment = AirflowStack(bin_dir, home, workers=WORKERS)
    except Exception as exc:
        skip_or_fail(f"no PostgreSQL for Airflow: {type(exc).__name__}: {exc}")
    try:
        deployment.start_dask()
        deployment.start_airflow()
        deployment.airflow("pools", "set", "dask_io", "4", "pool of the Dask resource test")
        deployment.wait_for_dags(*DAG_IDS)
        yield deployment
    finally:
        deployment.close()
        leftovers = leftover_processes(home)
        assert not leftovers, "processes left after the deployment stopped:\n" + "\n".join(
            leftovers
        )


def runs_of(stack: AirflowStack, run_id: str) -> list[tuple[str, str, str, int, int]]:
    """(event, worker, dag.task, try, bash pid) of the run's ledger lines."""
    return [
        (line[0], line[2], line[3], int(line[5]), int(line[6]))
        for line in stack.ledger_lines()
        if line[4] == run_id
    ]


def mismatch_reasons(stack: AirflowStack, run_id: str) -> list[str]:
    rows = stack.query(
        "select extra from log where run_id = :r and event = 'state mismatch'", r=run_id
    )
    return [str(row[0]) for row in rows]


@pytest.mark.timeout(900)
def test_fifty_tasks_all_succeed_on_dask(stack: AirflowStack) -> None:
    run_id = stack.trigger("e2e_50")
    assert stack.wait_for_run(run_id, timeout=600) == "success"
    states = stack.ti_states(run_id)
    assert len(states) == 50 and {s for s, _ in states.values()} == {"success"}
    assert mismatch_reasons(stack, run_id) == []
    assert "reported that the task instance" not in stack.procs["scheduler"].log.read_text()
    # Dask holds the next tasks ready, yet never more than parallelism (4) run at once.
    rows = stack.query(
        "select extract(epoch from start_date), extract(epoch from end_date) "
        "from task_instance where run_id = :r",
        r=run_id,
    )
    running, most = 0, 0
    for _, change in sorted([(s, 1) for s, _ in rows] + [(e, -1) for _, e in rows]):
        running += change
        most = max(most, running)
    assert most <= 4
    # Each supervisor noticed its task's end at once, not a heartbeat interval later.
    lags = supervisor_lags(stack, "e2e_50", run_id)
    assert len(lags) >= 40 and statistics.median(lags) < 0.5, sorted(lags)


def supervisor_lags(stack: AirflowStack, dag_id: str, run_id: str) -> list[float]:
    """Seconds from each task's last log line to its supervisor's "Workload finished" (in
    the console output the executor keeps, written shortly after each task's event)."""

    def stamp(line: str) -> float:
        return datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp()

    lags = []
    root = stack.home / "logs"
    for task_log in root.glob(f"dag_id={dag_id}/run_id={run_id}/task_id=*/attempt=1.log"):
        task = task_log.parent.name
        ended = stamp(task_log.read_text().strip().splitlines()[-1])
        for run_logs in root.glob(f"airdask/dag_id={dag_id}/run_id={run_id}~*"):
            console = packed_logs(str(run_logs)).get(f"{task}/attempt=1.log", "")
            done = [line for line in console.splitlines()
                    if '"event":"Workload finished"' in line]  # fmt: skip
            if done:
                lags.append(stamp(done[0]) - ended)
    return lags


def test_a_failing_task_is_retried_by_airflow_then_failed(stack: AirflowStack) -> None:
    run_id = stack.trigger("af_fail")
    assert stack.wait_for_run(run_id) == "failed"
    states = stack.ti_states(run_id)
    assert states["failing"] == ("failed", 2)
    assert states["after"][0] == "upstream_failed"
    starts = [(task, tries) for event, _, task, tries, _ in runs_of(stack, run_id)
              if event == "start"]  # fmt: skip
    assert starts == [("af_fail.failing", 1), ("af_fail.failing", 2)]


def test_a_pool_mapped_to_a_worker_resource_is_never_exceeded(stack: AirflowStack) -> None:
    # Airflow's pool has 4 slots; the one worker offering resource dask_io has 2.
    run_id = stack.trigger("af_pool")
    assert stack.wait_for_run(run_id) == "success"
    lines = [(line[0], float(line[1]), line[2]) for line in stack.ledger_lines()
             if line[4] == run_id]  # fmt: skip
    assert len(lines) == 12 and {worker for _, _, worker in lines} == {"w1"}
    running, most = 0, 0
    for event, _, _ in sorted(lines, key=lambda line: (line[1], line[0] == "start")):
        running += 1 if event == "start" else -1
        most = max(most, running)
    assert most == 2


def test_a_queue_routes_to_the_one_worker_offering_it(stack: AirflowStack) -> None:
    run_id = stack.trigger("af_queue")
    assert stack.wait_for_run(run_id) == "failed"
    states = stack.ti_states(run_id)
    assert states["special"][0] == "success"
    assert {worker for _, worker, _, _, _ in runs_of(stack, run_id)} == {"w1"}
    # A queue no worker offers: the task fails at once, with the reason and the fix.
    assert states["nowhere"][0] == "failed"
    (reason,) = mismatch_reasons(stack, run_id)
    assert "no worker offers queue 'no_such_queue'" in reason
    assert "dask worker --resources" in reason


def test_a_pool_no_worker_offers_enough_of_fails_with_the_reason(stack: AirflowStack) -> None:
    run_id = stack.trigger("af_nopool")
    assert stack.wait_for_run(run_id) == "failed"
    assert stack.ti_states(run_id)["too_big"][0] == "failed"
    (reason,) = mismatch_reasons(stack, run_id)
    assert "pool 'dask_io' needs 3 slots but no worker offers more than 2" in reason
    assert "dask worker --resources" in reason


#: Run by the Airflow venv's python against the deployment's Dask cluster: an executor of
#: its own is handed one workload (argv[1] says which bad one) and heartbeats until the
#: workload's end is reported; prints the events.
BAD_WORKLOAD_PROBE = textwrap.dedent(
    """
    import json, sys, time, uuid
    from airflow.executors.workloads import BundleInfo, ExecuteTask
    from airflow.executors.workloads.task import TaskInstanceDTO
    from airdask.airflow import DaskExecutor

    executor = DaskExecutor()
    executor.start()
    ti = TaskInstanceDTO(
        id=uuid.uuid4(), task_id="probe", dag_id="probe", run_id="r", try_number=1,
        dag_version_id=uuid.uuid4(), pool_slots=1, priority_weight=1, queue="default",
    )
    token = "x"
    if sys.argv[1] == "expired_token":  # signed with the deployment's secret, a minute ago
        token = executor.jwt_generator.generate(
            extras={"sub": str(ti.id), "scope": "workload"}, valid_for=-60
        )
    executor.queued_tasks[ti.key] = ExecuteTask(
        ti=ti, dag_rel_path="probe.py", token=token, log_path=None,
        bundle_info=BundleInfo(name="dags-folder"),
    )
    events = {}
    deadline = time.monotonic() + 200
    while not {"success", "failed"} & set(events) and time.monotonic() < deadline:
        executor.heartbeat()  # never raises
        for key, (state, info) in executor.get_event_buffer().items():
            events[str(getattr(state, "value", state))] = str(info)
        time.sleep(0.2)  # the scheduler's heartbeat cadence
    executor.end()
    print(json.dumps(events))
    """
)


@pytest.mark.parametrize(
    ("case", "env", "expected"),
    [
        ("expired_token", {}, ["refused the workload's token", "task_queued_timeout"]),
        # The worker's interpreter has no Airflow (this suite's own venv has none).
        ("no_task_sdk", {"AIRFLOW__DASK__WORKER_PYTHON": sys.executable,
                         "AIRFLOW__DASK__FORKSERVER": "False"},
         ["no Apache Airflow task SDK", "install apache-airflow", "worker_python"]),
    ],
)  # fmt: skip
def test_a_bad_workload_fails_with_the_reason_through_the_executor(
    stack: AirflowStack, case: str, env: dict[str, str], expected: list[str]
) -> None:
    done = subprocess.run(
        [str(stack.bin / "python"), "-c", BAD_WORKLOAD_PROBE, case],
        env={**stack.env, **env}, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    events = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(events) >= {"queued", "failed"} and "success" not in events, events
    for words in expected:
        assert words in events["failed"], events


def test_the_api_returns_the_tasks_log(stack: AirflowStack) -> None:
    run_id = stack.trigger("af_logs")
    assert stack.wait_for_run(run_id) == "success"
    found = stack.api(
        "GET", f"dags/af_logs/dagRuns/{run_id}/taskInstances/talk/logs/1?full_content=true"
    )
    events = [str(item.get("event", "")) for item in found["content"] if isinstance(item, dict)]
    assert "the-task-said-hello-to-its-log" in events


def log_events(stack: AirflowStack, dag_id: str, run_id: str, task_id: str) -> list[str]:
    found = stack.api(
        "GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/1?full_content=true"
    )
    return [str(item.get("event", "")) for item in found["content"] if isinstance(item, dict)]


def test_the_api_returns_a_running_tasks_log_from_its_dask_worker(stack: AirflowStack) -> None:
    run_id = stack.trigger("af_live")
    seen: list[str] = []

    def live_log_read() -> bool:
        if stack.ti_states(run_id).get("live", ("",))[0] != "running":
            return False
        seen[:] = log_events(stack, "af_live", run_id, "live")
        return "the-running-task-said-hello" in seen

    stack.wait(live_log_read, 180, "the running task's log through the API", "scheduler")
    # Read while it ran, from its Dask worker by the executor in the API server.
    assert any("through airdask" in event for event in seen), seen
    assert stack.ti_states(run_id)["live"][0] == "running"
    Path(f"{stack.ledger}.release.{run_id}").touch()
    assert stack.wait_for_run(run_id) == "success"
    assert "the-running-task-said-hello" in log_events(stack, "af_live", run_id, "live")


@pytest.mark.timeout(400)
def test_a_killed_scheduler_restarts_and_adopts_its_running_tasks(stack: AirflowStack) -> None:
    run_id = stack.trigger("af_slow")

    def all_started() -> bool:
        return sum(event == "start" for event, *_ in runs_of(stack, run_id)) == 4

    stack.wait(all_started, 180, "the four slow tasks to start", "scheduler")
    (old_job,) = stack.query("select max(id) from job where job_type = 'SchedulerJob'")[0]
    stack.kill("scheduler", signal.SIGKILL)
    stack.start_scheduler()
    assert stack.wait_for_run(run_id, timeout=240) == "success"
    # Adopted while they ran (45 s each): the new scheduler's job queued them, same try.
    jobs = stack.query("select queued_by_job_id from task_instance where run_id = :r", r=run_id)
    assert all(job > old_job for (job,) in jobs), (old_job, jobs)
    runs = collections.Counter(
        (task, tries) for event, _, task, tries, _ in runs_of(stack, run_id) if event == "start"
    )
    assert runs == {(f"af_slow.slow_{i}", 1): 1 for i in range(4)}  # each ran once
    assert {tries for _, tries in stack.ti_states(run_id).values()} == {1}
    assert "adopted" in stack.procs["scheduler"].log.read_text()


@pytest.mark.timeout(400)
def test_a_killed_dask_worker_is_retried_by_airflow_without_orphans(stack: AirflowStack) -> None:
    run_id = stack.trigger("af_victim")
    stack.wait(lambda: runs_of(stack, run_id), 180, "the victim to start", "scheduler")
    _, worker, _, tries, bash_pid = runs_of(stack, run_id)[0]
    assert tries == 1 and pid_alive(bash_pid)
    stack.kill(f"dask-worker-{worker}", signal.SIGKILL)
    wait_for(lambda: not pid_alive(bash_pid), timeout=10, what="the killed worker's task to die")
    assert stack.wait_for_run(run_id, timeout=240) == "success"
    assert stack.ti_states(run_id)["victim"] == ("success", 2)
    # Its fork server stopped it (its task marked itself failed through the API), and the
    # executor reported the attempt failed with the reason once Dask gave up on it.
    scheduler_log = stack.procs["scheduler"].log.read_text()
    assert f"run_id='{run_id}', try_number=1, map_index=-1) failed: worker died" in scheduler_log
    spec = next(spec for spec in WORKERS if spec.name == worker)
    stack.start_worker(spec)
    stack.wait_for_workers(len(WORKERS))


def test_a_refused_token_fails_with_the_reason(stack: AirflowStack, tmp_path: Path) -> None:
    """What a worker does with a workload whose token the API server refuses (expired after
    waiting in Dask past [scheduler] task_queued_timeout, or signed with another secret)."""
    from airdask.airflow import outcomes
    from airdask.airflow import worker_script as ws

    workload = tmp_path / "workload.json"
    subprocess.run(
        [str(stack.bin / "python"), "-c", WORKLOAD_WRITER, str(workload)],
        env=stack.env, check=True, timeout=120,
    )  # fmt: skip
    done = subprocess.run(
        [str(stack.bin / "python"), ws.__file__, "--server",
         f"{stack.api_url}/execution/", "--json-path", str(workload)],
        env={k: v for k, v in stack.env.items() if k != ws.FORKSERVER_ENV},
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == ws.EXIT_TOKEN_REFUSED, done.stderr[-2000:]
    reason = outcomes.reason_from_log(done.stderr.splitlines())
    assert reason and "refused the workload's token" in reason and "jwt_secret" in reason
