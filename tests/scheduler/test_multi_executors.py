"""Several executors in one scheduler, end to end: a DAG whose tasks run on the Dask,
Local and Sequential executors side by side through ``airdask run`` and ``airdask
scheduler``; a pool shared across them and ``[core] parallelism`` never exceeded (ledgers
of start/end times written by the commands); names that are not configured; and adoption
per executor after the scheduler is SIGKILLed and restarted."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from airdask.config import Config, load_config
from airdask.dag import DAG, PythonTask
from airdask.dashboard.page import live_columns
from airdask.dashboard.summary import build_summary
from airdask.executors.dask import DaskExecutor
from airdask.executors.local import LocalExecutor
from airdask.executors.names import ExecutorName, parse_executor_names
from airdask.executors.sequential import SequentialExecutor
from airdask.scheduler import recovery
from airdask.scheduler.executors import ExecutorSet
from airdask.scheduler.loop import SchedulerJob
from airdask.scheduler.runs import RunError, create_run, start_run
from airdask.scheduler.single_run import drive_run
from airdask.store import DagRun, Job, Log, Pool, Store, TaskInstance, utcnow
from celery_support import (
    REDIS_DB,
    Worker,
    broker_settings,
    flush_redis,
    require_broker,
    start_worker,
)
from proc_support import wait_for
from sched_support import (
    AIRDASK,
    cli,
    cli_env,
    log_events,
    make_store,
    run_state,
    scheduler_process,
    tis_of,
)
from task_funcs import ledger_step_source, ledger_task, max_concurrency, read_ledger


@dataclass(frozen=True)
class Kind:
    """One executor of the mixed DAG: its ``[core] executor`` entry, how its tasks name it,
    the id the TI records, the environment it needs, and optionally the name of a pytest
    fixture that provides what it runs on (workers, a broker) for the test and returns more
    environment (``dict[str, str]``)."""

    entry: str
    pick: str
    id: str
    env: dict[str, str] = field(default_factory=dict)
    fixture: str | None = None


EMBEDDED_DASK = {
    "AIRDASK__DASK__DASHBOARD_ADDRESS": "127.0.0.1:0",
    "AIRDASK__DASK__N_WORKERS": "1",
    "AIRDASK__DASK__THREADS_PER_WORKER": "2",
}

#: CeleryExecutor's broker (Redis, a database of this module's own); the ``celery_env``
#: fixture starts a worker on it for the tests that run the mixed DAG.
CELERY_OPTIONS = broker_settings("redis", REDIS_DB["multi"])

#: The executors the mixed DAG runs on, side by side.
EXECUTOR_KINDS: list[Kind] = [
    Kind("DaskExecutor", "DaskExecutor", "DaskExecutor", EMBEDDED_DASK),
    Kind("LocalExecutor", "airdask.executors.local.LocalExecutor", "LocalExecutor"),
    Kind("seq:SequentialExecutor", "seq", "seq"),
    Kind("celery:CeleryExecutor", "celery", "celery", fixture="celery_env"),
]


@pytest.fixture(scope="module")
def celery_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    require_broker("redis")
    flush_redis(REDIS_DB["multi"])
    worker = start_worker(CELERY_OPTIONS, tmp_path_factory.mktemp("celery"), concurrency=2)
    yield worker
    worker.stop()


@pytest.fixture
def celery_env(celery_worker: Worker) -> dict[str, str]:
    """The ``AIRDASK__CELERY__*`` settings of the running worker's broker."""
    return {f"AIRDASK__CELERY__{k.upper()}": v for k, v in CELERY_OPTIONS.items()}


#: How the commands name the executors they host (``[core] executor``, normalised).
LABEL = ",".join(
    str(name) for name in parse_executor_names(",".join(k.entry for k in EXECUTOR_KINDS))
)
TASKS_PER_KIND = 3
SHARED_POOL_SLOTS = 2

MIXED_DAG = """
from airdask.dag import DAG, BashTask

KINDS = {picks!r}

{step}

# default_args pick the second executor for the tasks that name none
with DAG("mixed", default_args={{"executor": KINDS[1], "retry_delay": 0}}) as dag:
    start = BashTask("start", "true")
    end = BashTask("end", "true", executor=KINDS[0])
    for k, pick in enumerate(KINDS):
        for i in range({per_kind}):
            name = f"k{{k}}_{{i}}"
            task = BashTask(name, step(name, 0.8), executor=pick, pool="shared")
            start >> task >> end
"""


def _mixed_home(
    tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[Path, Path, dict[str, str]]:
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    ledger = tmp_path / "ledger"
    picks = [kind.pick for kind in EXECUTOR_KINDS]
    (home / "dags" / "mixed.py").write_text(
        MIXED_DAG.format(step=ledger_step_source(ledger), picks=picks, per_kind=TASKS_PER_KIND)
    )
    env: dict[str, str] = {"AIRDASK__CORE__EXECUTOR": ",".join(k.entry for k in EXECUTOR_KINDS)}
    for kind in EXECUTOR_KINDS:
        env.update(kind.env)
        if kind.fixture is not None:
            env.update(request.getfixturevalue(kind.fixture))
    made = cli("pools", "set", "shared", str(SHARED_POOL_SLOTS), home=home, env=env)
    assert made.returncode == 0, made.stderr
    return home, ledger, env


def _check_mixed_run(home: Path, ledger: Path, run_id: str) -> None:
    store = Store.from_config(load_config({"AIRDASK_HOME": str(home)}))
    try:
        assert run_state(store, "mixed", run_id) == "success"
        tis = tis_of(store, "mixed", run_id)
        expected = {"start": EXECUTOR_KINDS[1].id, "end": EXECUTOR_KINDS[0].id}
        for k, kind in enumerate(EXECUTOR_KINDS):
            expected.update({f"k{k}_{i}": kind.id for i in range(TASKS_PER_KIND)})
        assert {t: ti.executor for t, ti in tis.items()} == expected
        assert {ti.state for ti in tis.values()} == {"success"}
        successes = Counter(e.task_id for e in log_events(store, "mixed", event="success"))
        assert set(successes.values()) == {1} and len(successes) == len(expected)
    finally:
        store.dispose()
    # the shared pool held across executors: never more than its slots at once, and used
    rows = read_ledger(str(ledger))
    assert Counter(kind for kind, _, _ in rows) == {
        "start": TASKS_PER_KIND * len(EXECUTOR_KINDS),
        "end": TASKS_PER_KIND * len(EXECUTOR_KINDS),
    }
    assert max_concurrency(str(ledger)) == SHARED_POOL_SLOTS


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_mixed_dag_through_airdask_run(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    home, ledger, env = _mixed_home(tmp_path, request)
    done = cli("run", "mixed", home=home, env=env, timeout=200)
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = next(
        line.split(" run ")[1].split()[0] for line in done.stdout.splitlines() if " run " in line
    )
    assert f"on {LABEL}" in done.stdout
    _check_mixed_run(home, ledger, run_id)
    states = cli("tasks", "states", "mixed", run_id, home=home, env=env)
    assert states.returncode == 0, states.stderr
    for output in (done.stdout, states.stdout):  # each task's row names its executor
        rows = {line.split()[1]: line for line in output.splitlines() if " k" in line}
        for k, kind in enumerate(EXECUTOR_KINDS):
            assert f" {kind.id} " in rows[f"k{k}_0"], output


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_mixed_dag_through_airdask_scheduler(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    home, ledger, env = _mixed_home(tmp_path, request)
    trig = cli("dags", "trigger", "mixed", "--run-id", "r1", home=home, env=env)
    assert trig.returncode == 0, trig.stderr
    store = Store.from_config(load_config({"AIRDASK_HOME": str(home)}))
    scheduler = subprocess.Popen(
        [*AIRDASK, "scheduler"],
        env=cli_env(home, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: run_state(store, "mixed", "r1") in ("success", "failed"),
            timeout=180,
            what="the mixed run to finish under airdask scheduler",
        )
    finally:
        scheduler.send_signal(signal.SIGTERM)
        out, err = scheduler.communicate(timeout=60)
        store.dispose()
    assert scheduler.returncode == 0, err
    assert f"running {LABEL}" in out
    _check_mixed_run(home, ledger, "r1")


def _ledger_dag(
    ledger: Path,
    picks: dict[str, str | None],
    seconds: float,
    pools: dict[str, str] | None = None,
) -> DAG:
    with DAG("par", default_args={"retry_delay": 0}) as dag:
        for name, pick in picks.items():
            PythonTask(
                name,
                ledger_task,
                op_args=[str(ledger), name, seconds],
                executor=pick,
                pool=(pools or {}).get(name),
            )
    return dag


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_global_parallelism_across_executors_and_each_own(
    tmp_path: Path, config: Config, backend: str, request: pytest.FixtureRequest
) -> None:
    """``[core] parallelism`` = 3 across a LocalExecutor whose own parallelism is 1 and a
    DaskExecutor whose own is 3: at most 3 at once in all, at most 1 Local task; and a
    2-slot pool used by tasks of both never holds more than 2."""
    if backend == "postgres":
        url = request.getfixturevalue("pg_url")
        config = config.with_overrides({("database", "sql_alchemy_conn"): url})
    store = make_store(config)
    with store.session() as session:
        session.add(Pool(name="shared", slots=2))
    ledger = tmp_path / "ledger"
    picks: dict[str, str | None] = {f"l{i}": "LocalExecutor" for i in range(4)}
    picks.update({f"d{i}": None for i in range(6)})  # None: the default, DaskExecutor
    shared = {name: "shared" for name in ("l2", "l3", "d3", "d4", "d5")}
    dag = _ledger_dag(ledger, picks, 0.6, shared)
    names = parse_executor_names("DaskExecutor,LocalExecutor")
    dask_config = config.with_overrides(
        {
            ("dask", "n_workers"): 1,
            ("dask", "threads_per_worker"): 3,
            ("dask", "dashboard_address"): "127.0.0.1:0",
        }
    )
    executors = ExecutorSet(
        [
            (names[0], DaskExecutor(config=dask_config, parallelism=3)),
            (names[1], LocalExecutor(1, config=config)),
        ],
        parallelism=3,
    )
    job = SchedulerJob(store=store, executor=executors, config=config, dags={"par": dag})
    outcome = drive_run(job, dag, timeout=120, handle_signals=False)
    assert outcome.state == "success", tis_of(store, "par", outcome.run_id)
    tis = tis_of(store, "par", outcome.run_id)
    assert {t: ti.executor for t, ti in tis.items()} == {
        t: ("LocalExecutor" if t.startswith("l") else "DaskExecutor") for t in picks
    }
    rows = read_ledger(str(ledger))
    assert len(rows) == 2 * len(picks)
    assert max_concurrency(str(ledger)) <= 3

    def peak(names: set[str], label: str) -> int:
        sub = tmp_path / f"ledger-{label}"
        sub.write_text(
            "".join(f"{kind} {name} {stamp} 0\n" for kind, name, stamp in rows if name in names)
        )
        return max_concurrency(str(sub))

    assert peak({t for t in picks if t[0] == "l"}, "local") == 1  # Local's own parallelism
    assert peak({t for t in picks if t[0] == "d"}, "dask") >= 2  # not held to Local's limit
    assert peak(set(shared), "shared") <= 2  # the pool, across both executors
    store.dispose()


@pytest.mark.timeout(120)
def test_unknown_executor_fails_the_run_or_the_task_with_the_reason(
    tmp_path: Path, config: Config
) -> None:
    """The scheduler first sees a run whose DAG names an executor it does not host: the run
    fails at once naming the configured ones. A DAG edited after its run started to name
    one: that task fails with the reason, the others run."""
    store = make_store(config)
    ledger = tmp_path / "ledger"
    names = parse_executor_names("LocalExecutor,SequentialExecutor")

    def job_for(dag: DAG) -> SchedulerJob:
        built = [(names[0], LocalExecutor(config=config))]
        executors = ExecutorSet(built, parallelism=4)
        return SchedulerJob(store=store, executor=executors, config=config, dags={"par": dag})

    bad = _ledger_dag(ledger, {"a": None, "b": "celery"}, 0)
    with store.session() as session:
        run_id = create_run(session, bad).run_id
    job = job_for(bad)
    job.run(until=lambda: run_state(store, "par", run_id) == "failed", handle_signals=False)
    with store.session() as session:
        run = session.get(DagRun, ("par", run_id))
        assert run is not None and run.state == "failed"
    [failed] = log_events(store, "par", event="run_failed")
    assert failed.extra == (
        "task 'b' of DAG 'par': executor 'celery' is not configured (configured in [core] "
        "executor: LocalExecutor (default))"
    )
    # drive_run (airdask run, run_dag) refuses it before writing the run
    with pytest.raises(RunError, match="executor 'celery' is not configured"):
        drive_run(job_for(bad), bad, handle_signals=False)

    good = _ledger_dag(ledger, {"a": None, "b": None}, 0)
    good.get_task("a") >> good.get_task("b")
    job = job_for(good)
    with store.session() as session:
        run_id = create_run(session, good).run_id
    job.register()
    job.start()
    job.run_once()  # the run starts; a is queued on the default executor
    assert tis_of(store, "par", run_id)["a"].state in ("queued", "running", "success")
    good.get_task("b").executor = "celery"  # as if the file were edited meanwhile
    job.run(
        until=lambda: run_state(store, "par", run_id) in ("success", "failed"),
        handle_signals=False,
    )
    tis = tis_of(store, "par", run_id)
    assert tis["a"].state == "success" and tis["a"].executor == "LocalExecutor"
    assert tis["b"].state == "failed" and tis["b"].try_number == 0
    assert "executor 'celery' is not configured" in (tis["b"].reason or "")
    store.dispose()


def test_dashboard_summary_shows_the_executor_of_each_live_task(config: Config) -> None:
    store = make_store(config)
    dag = _ledger_dag(Path("/dev/null"), {"a": None}, 0)
    with store.session() as session:
        run = create_run(session, dag)
        start_run(session, run, dag)
    with store.session() as session:
        ti = session.get(TaskInstance, ("par", "a", run.run_id, -1))
        assert ti is not None
        ti.state, ti.executor, ti.try_number = "running", "celery", 1
    with store.session() as session:
        summary = build_summary(session)
    [live] = summary["live"]
    assert (live["task_id"], live["state"], live["executor"]) == ("a", "running", "celery")
    assert live_columns(summary)["executor"] == ["celery"]
    store.dispose()


ADOPT_DAG = """
from airdask.dag import DAG, BashTask

FLAG = {flag!r}

{step}

# The Dask tasks wait for a Local one to have started, so that the scheduler is killed
# with attempts of both executors in flight, however slow the machine.
WAIT = f"for i in $(seq 1200); do [ -e {{FLAG}} ] && break; sleep 0.1; done; sleep 3"
with DAG("adopt") as dag:
    start = BashTask("start", "true")
    end = BashTask("end", "true")
    for i in range(3):
        start >> BashTask(f"d{{i}}", step(f"d{{i}}", WAIT)) >> end
        local = step(f"l{{i}}", f"touch {{FLAG}}; sleep 5")
        start >> BashTask(f"l{{i}}", local, executor="LocalExecutor") >> end
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_adoption_per_executor_after_a_scheduler_sigkill(tmp_path: Path) -> None:
    """Dask attempts (an external cluster outlives the scheduler) are adopted by the
    DaskExecutor; Local attempts die with the scheduler and are reset: only the executor
    recorded on each TI is asked. Every task runs to one success."""
    from dask_support import external_cluster

    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    ledger = tmp_path / "ledger"
    flag = tmp_path / "a-local-task-started"
    (home / "dags" / "adopt.py").write_text(
        ADOPT_DAG.format(step=ledger_step_source(ledger), flag=str(flag))
    )
    with external_cluster(tmp_path) as cluster:
        cluster.start_worker(nthreads=3)
        env = {
            "AIRDASK__CORE__EXECUTOR": "DaskExecutor,LocalExecutor",
            "AIRDASK__DASK__CLUSTER_ADDRESS": cluster.address,
            "AIRDASK__SCHEDULER__JOB_HEARTBEAT_SEC": "0.2",
            "AIRDASK__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "2",
            "AIRDASK__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "0.5",
        }
        trig = cli("dags", "trigger", "adopt", "--run-id", "r1", home=home, env=env)
        assert trig.returncode == 0, trig.stderr
        store = Store.from_config(load_config({"AIRDASK_HOME": str(home)}))

        def in_flight() -> set[str]:
            rows = read_ledger(str(ledger))
            ended = {n for k, n, _ in rows if k == "end"}
            return {n for k, n, _ in rows if k == "start"} - ended

        def both_in_flight() -> bool:
            names = in_flight()
            return any(n[0] == "d" for n in names) and any(n[0] == "l" for n in names)

        first = scheduler_process(home, env)
        try:
            wait_for(
                both_in_flight,
                timeout=90,
                what="a Dask and a Local task running at once under the first scheduler",
            )
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=30)
        cut_short = in_flight()
        second = scheduler_process(home, env)
        try:
            wait_for(
                lambda: run_state(store, "adopt", "r1") in ("success", "failed"),
                timeout=150,
                what="the run to finish under the restarted scheduler",
            )
        finally:
            second.send_signal(signal.SIGTERM)
            _, err = second.communicate(timeout=60)
        assert second.returncode == 0, err
    tis = tis_of(store, "adopt", "r1")
    assert run_state(store, "adopt", "r1") == "success"
    assert {ti.state for ti in tis.values()} == {"success"}
    assert {t: ti.executor for t, ti in tis.items()} == {
        t: ("LocalExecutor" if t.startswith("l") else "DaskExecutor") for t in tis
    }
    successes = Counter(e.task_id for e in log_events(store, "adopt", event="success"))
    assert set(successes.values()) == {1} and len(successes) == 8
    ends = Counter(name for kind, name, _ in read_ledger(str(ledger)) if kind == "end")
    assert set(ends.values()) == {1} and len(ends) == 6
    adopted = {e.task_id for e in log_events(store, "adopt", event="adopted")}
    reset = {e.task_id for e in log_events(store, "adopt", event="orphan_reset")}
    # the DaskExecutor adopted its own in-flight attempts (run once: try 1, one start) ...
    dask_in_flight = {t for t in cut_short if t.startswith("d")}
    assert dask_in_flight and dask_in_flight <= adopted
    assert all(t.startswith("d") for t in adopted)
    starts = Counter(name for kind, name, _ in read_ledger(str(ledger)) if kind == "start")
    assert all(tis[t].try_number == 1 and starts[t] == 1 for t in dask_in_flight)
    # ... and the Local ones, which died with the scheduler, were reset and run again
    local_in_flight = {t for t in cut_short if t.startswith("l")}
    assert local_in_flight and local_in_flight <= reset
    assert all(tis[t].try_number == 2 for t in local_in_flight)
    store.dispose()


class Recording(SequentialExecutor):
    """Records which task instances recovery offers it; adopts all, or fails to answer."""

    def __init__(self, *, fail: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail = fail
        self.offered: list[str] = []
        self.withdrawn: list[str] = []

    def try_adopt_task_instances(self, tis: Sequence[TaskInstance]) -> Sequence[TaskInstance]:
        self.offered += [ti.task_id for ti in tis]
        if self.fail:
            raise ConnectionError("the cluster did not answer")
        return []

    def cleanup_stuck_queued_tasks(self, tis: list[TaskInstance]) -> list[str]:
        self.withdrawn += [ti.task_id for ti in tis]
        return [f"withdrew {ti.task_id}" for ti in tis]


class OtherRecording(Recording):
    """The same, as a second class (each class is configured once)."""


def _recording_set(config: Config, *, b_fails: bool) -> tuple[ExecutorSet, Recording, Recording]:
    a = Recording(config=config)
    b = OtherRecording(config=config, fail=b_fails)
    names = [
        ExecutorName(f"{__name__}.Recording", "a"),
        ExecutorName(f"{__name__}.OtherRecording", "b"),
    ]
    return ExecutorSet([(names[0], a), (names[1], b)], parallelism=0), a, b


def _live_run(store: Store, job_id: int, executors: dict[str, str | None]) -> tuple[DAG, str]:
    """A running run of DAG ``rec`` whose TIs are queued by ``job_id`` on ``executors``."""
    with DAG("rec") as dag:
        for task_id in executors:
            PythonTask(task_id, ledger_task, op_args=["/dev/null", task_id, 0])
    with store.session() as session:
        run = create_run(session, dag, scheduled_by_job_id=job_id)
        start_run(session, run, dag)
        session.flush()
        for ti in session.scalars(select(TaskInstance).where(TaskInstance.run_id == run.run_id)):
            ti.state, ti.try_number, ti.queued_by_job_id = "queued", 1, job_id
            ti.queued_dttm = utcnow() - timedelta(seconds=120)
            ti.executor = executors[ti.task_id]
        return dag, run.run_id


def test_recovery_asks_only_the_executor_each_task_instance_names(config: Config) -> None:
    """Orphans of a dead job go each to its own executor (none recorded: the default); one
    executor failing to answer defers only its own; one not configured here is reset with
    a reason naming it. Stuck-in-queued withdrawal is routed the same way."""
    store = make_store(config)
    with store.session() as session:
        dead = Job(state="running", hostname="gone", pid=1)
        dead.latest_heartbeat = utcnow() - timedelta(seconds=120)
        session.add(dead)
        session.flush()
        dead_id = dead.id
    placed: dict[str, str | None] = {"a1": "a", "a2": None, "b1": "b", "g1": "gone"}
    _, run_id = _live_run(store, dead_id, placed)
    executors, a, b = _recording_set(config, b_fails=True)
    job = SchedulerJob(store=store, executor=executors, config=config)
    job_id = job.register()
    with store.session() as session:
        report = recovery.adopt_or_reset_orphans(session, executors, job_id=job_id, threshold=30)
    assert sorted(a.offered) == ["a1", "a2"] and b.offered == ["b1"]
    tis = tis_of(store, "rec", run_id)
    assert {t: (tis[t].state, tis[t].queued_by_job_id) for t in placed} == {
        "a1": ("queued", job_id),  # adopted by a
        "a2": ("queued", job_id),  # none recorded: the default, a
        "b1": ("queued", dead_id),  # b could not answer: left for the next check
        "g1": (None, dead_id),  # its executor is not configured here: reset
    }
    assert [k.split()[0] for k in report.deferred] == ["rec.b1"]
    assert "its executor 'gone' is not configured here" in (tis["g1"].reason or "")
    assert "configured: a:Recording (default), b:OtherRecording" in (tis["g1"].reason or "")
    [failed] = [e for e in _all_logs(store) if e.event == "adopt_failed"]
    assert "b.try_adopt_task_instances failed" in (failed.extra or "")
    # stuck in queued: each executor is asked to withdraw only its own
    with store.session() as session:
        stuck = recovery.handle_stuck_queued(
            session, executors, job_id=job_id, timeout=10, max_reschedules=2
        )
    assert sorted(a.withdrawn) == ["a1", "a2"] and b.withdrawn == []
    assert sorted(stuck.rescheduled) == sorted(str(tis[t].key) for t in ("a1", "a2"))
    store.dispose()


def _all_logs(store: Store) -> list[Log]:
    with store.session() as session:
        return list(session.scalars(select(Log).order_by(Log.id)))


#: The executors whose workers the kill test SIGKILLs (SequentialExecutor has none: it runs
#: in the scheduler's own process).
KILLED_KINDS = [kind for kind in EXECUTOR_KINDS if kind.id != "seq"]
KILL_POOL_SLOTS = 3

KILL_DAG = """
from airdask.dag import DAG, BashTask

KINDS = {picks!r}

{step}

def tagged(name):
    # the try in the name tells a retry from a second copy of the same try
    return step(name + "#$AIRDASK_CTX_TRY_NUMBER", {seconds})

with DAG("kills", default_args={{"retries": 2, "retry_delay": 0}}) as dag:
    for k, pick in enumerate(KINDS):
        for i in range({per_kind}):
            BashTask(f"k{{k}}_{{i}}", tagged(f"k{{k}}_{{i}}"), executor=pick, pool="shared")
"""


@dataclass
class _Attempt:
    """One copy of a command as its ledger lines tell: ``pid`` is the command's own."""

    task: str
    try_number: int
    pid: int
    start: float
    end: float | None = None


def _attempts(ledger: Path) -> list[_Attempt]:
    found: dict[int, _Attempt] = {}
    text = ledger.read_text() if ledger.exists() else ""
    for line in text.split("\n")[:-1]:  # a line still being written has no newline yet
        kind, tag, stamp, pid = line.split()
        task, _, try_number = tag.partition("#")
        if kind == "start":
            found[int(pid)] = _Attempt(task, int(try_number), int(pid), float(stamp))
        else:
            found[int(pid)].end = float(stamp)
    return list(found.values())


def _ancestors(pid: int) -> list[int]:
    chain: list[int] = []
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


def _is_local_worker(pid: int) -> bool:
    try:
        return b"airdask.executors.local_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _peak(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    current = peak = 0
    for _, delta in events:  # at equal times an end (-1) sorts before a start
        current += delta
        peak = max(peak, current)
    return peak


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_worker_of_each_executor_sigkilled_mid_task(tmp_path: Path) -> None:
    """One DAG on Dask (an external cluster of two workers), Local and Celery (a real
    ``airdask celery worker`` on Redis) under ``airdask scheduler``; while a task of each
    runs, its host is SIGKILLed: the Dask worker running it, the LocalExecutor worker
    process running it, the Celery worker (then a new one is started). Dask reruns the
    lost attempt on the other worker, LocalExecutor reports the worker dead and the
    scheduler retries the task, the broker redelivers the Celery message (acks late) to the
    new worker. Every task ends in one success, no (task, try) completes twice, the killed
    copies die with their hosts (no command is left running), and the pool shared by the
    three executors never holds more than its slots."""
    import os
    import time

    from dask_support import external_cluster
    from proc_support import pid_alive

    require_broker("redis")
    db = REDIS_DB["multi-kills"]
    flush_redis(db)
    # Redis gives an unacknowledged message back once it is older than the visibility
    # timeout: longer than a task runs, so that only a dead worker's message comes back.
    options = {**broker_settings("redis", db), "visibility_timeout": "10"}
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    ledger = tmp_path / "ledger"
    picks = [kind.pick for kind in KILLED_KINDS]
    (home / "dags" / "kills.py").write_text(
        KILL_DAG.format(
            step=ledger_step_source(ledger), picks=picks, per_kind=TASKS_PER_KIND, seconds=3
        )
    )
    prefix = {kind.id: f"k{k}_" for k, kind in enumerate(KILLED_KINDS)}
    celery_workers: list[Worker] = []
    #: executor id -> when a host of it was SIGKILLed, and the copy it was picked for
    killed: dict[str, tuple[float, _Attempt]] = {}
    with external_cluster(tmp_path) as cluster:
        dask_workers = [cluster.start_worker(nthreads=2, nanny=False) for _ in range(2)]
        try:
            celery_workers.append(start_worker(options, tmp_path / "celery-1", concurrency=2))
            from distributed import Client

            with Client(cluster.address, timeout=30) as client:
                wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, timeout=60,
                         what="both Dask workers connected")  # fmt: skip
            env = {
                "AIRDASK__CORE__EXECUTOR": ",".join(kind.entry for kind in KILLED_KINDS),
                "AIRDASK__DASK__CLUSTER_ADDRESS": cluster.address,
                **{f"AIRDASK__CELERY__{k.upper()}": v for k, v in options.items()},
            }
            made = cli("pools", "set", "shared", str(KILL_POOL_SLOTS), home=home, env=env)
            assert made.returncode == 0, made.stderr
            trig = cli("dags", "trigger", "kills", "--run-id", "r1", home=home, env=env)
            assert trig.returncode == 0, trig.stderr
            store = Store.from_config(load_config({"AIRDASK_HOME": str(home)}))
            scheduler_log = tmp_path / "scheduler.log"
            with open(scheduler_log, "wb") as out:
                scheduler = subprocess.Popen(
                    [*AIRDASK, "scheduler"], env=cli_env(home, env),
                    stdout=subprocess.DEVNULL, stderr=out,
                )  # fmt: skip

            def host_of(kind: str, chain: list[int]) -> int | None:
                if kind == "LocalExecutor":
                    return next((p for p in chain if _is_local_worker(p)), None)
                hosts = (
                    {w.pid for w in dask_workers}
                    if kind == "DaskExecutor"
                    else {celery_workers[0].process.pid}
                )
                return next((p for p in chain if p in hosts), None)

            def kill_a_host_of_each() -> bool:
                # a copy with a second of its sleep behind it and more ahead: not one
                # about to end as its host is killed
                now = time.time()
                running = [
                    a
                    for a in _attempts(ledger)
                    if a.end is None and 1 < now - a.start < 2 and pid_alive(a.pid)
                ]
                chains = {a.pid: _ancestors(a.pid) for a in running}
                for kind in [k for k in prefix if k not in killed]:
                    for attempt in running:
                        host = host_of(kind, chains[attempt.pid])
                        if not attempt.task.startswith(prefix[kind]) or host is None:
                            continue
                        os.kill(host, signal.SIGKILL)
                        killed[kind] = (time.time(), attempt)
                        break
                return len(killed) == len(prefix)

            try:
                wait_for(kill_a_host_of_each, timeout=150,
                         what="a task of each executor running, to kill its host")  # fmt: skip
                # the runner's supervision: a killed host's commands die with it
                wait_for(lambda: not any(pid_alive(a.pid) for _, a in killed.values()),
                         timeout=30, what="the commands of the killed hosts dead")  # fmt: skip
                # Redis gives an unacknowledged message back once it is older than the
                # visibility timeout, when a worker sweeps for such messages: as it starts,
                # then every 10 s (make_app sets unacked_restore_throttle=1). So the new
                # worker starts at once, and a sweep after the timeout finds the message.
                celery_workers.append(start_worker(options, tmp_path / "celery-2", wait=False))
                lost = killed["celery"][1]
                wait_for(
                    lambda: any(
                        a.task == lost.task and a.start > lost.start for a in _attempts(ledger)
                    ),
                    timeout=float(options["visibility_timeout"]) + 60,
                    what="the lost Celery message delivered again",
                )
                wait_for(
                    lambda: run_state(store, "kills", "r1") in ("success", "failed"),
                    timeout=200,
                    what="the run to finish after the kills",
                )
            finally:
                scheduler.send_signal(signal.SIGTERM)
                scheduler.wait(60)
            assert scheduler.returncode == 0, scheduler_log.read_text()
        finally:
            for worker in celery_workers:
                worker.stop()
    attempts = _attempts(ledger)
    wait_for(lambda: not any(pid_alive(a.pid) for a in attempts), timeout=20,
             what="no command process left alive")  # fmt: skip
    tis = tis_of(store, "kills", "r1")
    assert run_state(store, "kills", "r1") == "success", scheduler_log.read_text()
    assert {t: (ti.state, ti.executor) for t, ti in tis.items()} == {
        f"k{k}_{i}": ("success", kind.id)
        for k, kind in enumerate(KILLED_KINDS)
        for i in range(TASKS_PER_KIND)
    }
    successes = Counter(e.task_id for e in log_events(store, "kills", event="success"))
    assert set(successes.values()) == {1} and len(successes) == len(tis)
    # each (task, try) completed at most once, each task exactly once
    ended = Counter((a.task, a.try_number) for a in attempts if a.end is not None)
    assert set(ended.values()) == {1}
    assert Counter(task for task, _ in ended) == dict.fromkeys(tis, 1)
    # only copies on the killed hosts never ended (the one each kill was aimed at, and any
    # other its host ran), and each was run again to its end
    kind_of = {prefix[kind]: kind for kind in prefix}
    lost = [a for a in attempts if a.end is None]
    assert {a.pid for _, a in killed.values()} <= {a.pid for a in lost}
    for copy in lost:
        kind = kind_of[copy.task[:3]]
        assert copy.start <= killed[kind][0], (copy, killed)
        again = [a for a in attempts if a.task == copy.task and a.start > copy.start]
        assert any(a.end is not None for a in again), (kind, copy, attempts)
        if kind == "LocalExecutor":  # failed as 'worker died', then retried
            assert tis[copy.task].try_number > copy.try_number
        if kind == "celery":  # the same try, delivered again
            assert [a.try_number for a in again] == [copy.try_number]
    local_lost = {a.task for a in lost if kind_of[a.task[:3]] == "LocalExecutor"}
    died = {e.task_id for e in log_events(store, "kills") if "local worker" in (e.extra or "")}
    assert died == local_lost, log_events(store, "kills")
    # the pool shared across the executors held: a killed copy's slot ends at its kill
    spans = [
        (a.start, a.end if a.end is not None else killed[kind_of[a.task[:3]]][0]) for a in attempts
    ]
    assert 2 <= _peak(spans) <= KILL_POOL_SLOTS
    store.dispose()
