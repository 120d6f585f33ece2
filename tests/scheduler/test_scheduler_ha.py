"""Several `airdask scheduler` processes on one database: shared on PostgreSQL (one SIGKILLed
mid-run, the other adopts), refused on SQLite; `airdask run` works beside them."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from airdask.config import Config, load_config
from airdask.dag import DAG, BashTask
from airdask.executors import load_executor
from airdask.scheduler.jobs import SchedulerConflict
from airdask.scheduler.loop import SchedulerJob
from airdask.store import Job, Store, TaskInstance
from ha_support import FAST_RECOVERY, write_dag
from proc_support import wait_for
from sched_support import AIRDASK, cli, cli_env, log_events, make_store, run_state, tis_of
from task_funcs import read_ledger


def start_scheduler(home: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [*AIRDASK, "-v", "scheduler"], env=cli_env(home, env), stdout=out, stderr=out
        )


def live_tis_of(store: Store, job_id: int) -> int:
    with store.session() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(TaskInstance)
                .where(
                    TaskInstance.queued_by_job_id == job_id,
                    TaskInstance.state.in_(["queued", "running"]),
                )
            )
            or 0
        )


def scheduler_jobs(store: Store) -> dict[int, int]:
    """pid -> job id of the running SchedulerJobs."""
    with store.session() as session:
        rows = session.execute(
            select(Job.pid, Job.id).where(Job.job_type == "SchedulerJob", Job.state == "running")
        ).all()
    return {pid: job_id for pid, job_id in rows}


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_two_schedulers_share_a_run_and_one_takes_over_when_the_other_is_killed(
    tmp_path: Path, pg_url: str
) -> None:
    from dask_support import external_cluster

    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    ledger, side_ledger = tmp_path / "ledger", tmp_path / "side-ledger"
    width = 300
    write_dag(home / "dags", "ha", ledger, width)
    side_dag = write_dag(tmp_path, "beside", side_ledger, 20)
    with external_cluster(tmp_path) as cluster:
        cluster.start_worker(nthreads=2)
        cluster.start_worker(nthreads=2)
        env = {
            **FAST_RECOVERY,
            "AIRDASK__DATABASE__SQL_ALCHEMY_CONN": pg_url,
            "AIRDASK__CORE__EXECUTOR": "DaskExecutor",
            "AIRDASK__DASK__CLUSTER_ADDRESS": cluster.address,
            "AIRDASK__CORE__PARALLELISM": "8",
        }
        assert cli("db", "init", home=home, env=env).returncode == 0
        store = Store.from_url(pg_url)
        logs = [tmp_path / "scheduler-a.log", tmp_path / "scheduler-b.log"]
        procs = [start_scheduler(home, env, log) for log in logs]
        beside: subprocess.Popen[str] | None = None
        try:
            wait_for(lambda: len(scheduler_jobs(store)) == 2, timeout=60, what="two schedulers")
            jobs = scheduler_jobs(store)
            trig = cli("dags", "trigger", "ha", "--run-id", "r1", home=home, env=env)
            assert trig.returncode == 0, trig.stderr
            # `airdask run` beside them: it owns its run, the schedulers leave it alone.
            beside = subprocess.Popen(
                [*AIRDASK, "run", str(side_dag)],
                env=cli_env(home, env),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            victim, survivor = procs
            victim_job = jobs[victim.pid]
            wait_for(
                lambda: (
                    live_tis_of(store, victim_job) >= 4
                    and live_tis_of(store, jobs[survivor.pid]) >= 1
                    and sum(1 for r in read_ledger(str(ledger)) if r[0] == "end") >= 30
                ),
                timeout=120,
                what="both schedulers to be running tasks of the run",
            )
            victim.send_signal(signal.SIGKILL)
            victim.wait(30)
            wait_for(
                lambda: (
                    survivor.poll() is not None
                    or run_state(store, "ha", "r1") in ("success", "failed")
                ),
                timeout=180,
                what="the run to finish under the surviving scheduler",
            )
            assert survivor.poll() is None, logs[1].read_text()[-3000:]
            out, _ = beside.communicate(timeout=120)
            assert beside.returncode == 0, out
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(60)
            if beside is not None and beside.poll() is None:
                beside.kill()
                beside.communicate()
    assert survivor.returncode == 0, logs[1].read_text()[-3000:]
    assert run_state(store, "ha", "r1") == "success"
    tis = tis_of(store, "ha", "r1")
    assert len(tis) == width + 2 and {ti.state for ti in tis.values()} == {"success"}
    # the work was shared (both had attempts live before the kill), then taken over
    adoptions = log_events(store, "ha", event="adopted")
    assert adoptions, "the survivor adopted none of the victim's attempts"
    assert {e.extra for e in adoptions} == {
        f"from scheduler job {victim_job} by job {jobs[survivor.pid]}"
    }
    adopted = {e.task_id for e in adoptions}
    assert "adopted" in logs[1].read_text()
    assert all(tis[t].try_number == 1 for t in adopted)
    # every task's command started and ended exactly once, across both schedulers
    rows = read_ledger(str(ledger))
    for kind in ("start", "end"):
        counts = Counter(name for k, name, _ in rows if k == kind)
        assert counts == Counter(dict.fromkeys(tis, 1)), {t: n for t, n in counts.items() if n != 1}
    # the run beside them: its own job queued all of its task instances
    with store.session() as session:
        side = session.execute(
            select(TaskInstance.state, TaskInstance.queued_by_job_id).where(
                TaskInstance.dag_id == "beside"
            )
        ).all()
        run_job = session.scalars(select(Job.id).where(Job.job_type == "RunJob")).one()
    assert {state for state, _ in side} == {"success"} and {j for _, j in side} == {run_job}
    store.dispose()


def _sqlite_home(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    env = {**FAST_RECOVERY, "AIRDASK__CORE__EXECUTOR": "LocalExecutor"}
    return home, env


@pytest.mark.timeout(180)
def test_a_second_scheduler_on_sqlite_is_refused(tmp_path: Path) -> None:
    home, env = _sqlite_home(tmp_path)
    ledger = tmp_path / "ledger"
    side_dag = write_dag(tmp_path, "beside", ledger, 3)
    assert cli("db", "init", home=home, env=env).returncode == 0
    first = start_scheduler(home, env, tmp_path / "first.log")
    store = Store.from_config(load_config({"AIRDASK_HOME": str(home)}))
    try:
        wait_for(lambda: len(scheduler_jobs(store)) == 1, timeout=60, what="the first scheduler")
        [job_id] = scheduler_jobs(store).values()
        second = cli("scheduler", home=home, env=env, timeout=60)
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert lines[0].startswith(
            f"error: another scheduler is running on this SQLite database (job {job_id}, "
            f"pid {first.pid} on "
        )
        assert "use PostgreSQL" in lines[0]
        with store.session() as session:  # the refused one left no job row
            assert session.scalar(select(func.count()).select_from(Job)) == 1
        # `airdask run` owns its run: it may share the SQLite file with the scheduler
        run = cli("run", str(side_dag), home=home, env=env)
        assert run.returncode == 0, run.stdout + run.stderr
        # a scheduler that died is no obstacle, even before its heartbeat goes stale
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        again = start_scheduler(home, env, tmp_path / "again.log")

        def replaced() -> bool:
            running = scheduler_jobs(store)
            return again.poll() is not None or (len(running) == 1 and first.pid not in running)

        try:
            wait_for(replaced, timeout=60, what="a new scheduler to start after the kill")
            assert again.poll() is None, (tmp_path / "again.log").read_text()
        finally:
            again.send_signal(signal.SIGTERM)
            assert again.wait(60) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(30)
        store.dispose()


def test_of_two_schedulers_starting_at_once_on_sqlite_the_first_goes_on(config: Config) -> None:
    store = make_store(config)
    with DAG("nothing") as dag:
        BashTask("t", "true")
    first, second = (
        SchedulerJob(
            store=store,
            executor=load_executor("SequentialExecutor", config=config),
            config=config,
            dags={"nothing": dag},
        )
        for _ in range(2)
    )
    first.register()
    second.register()  # both registered, neither started: both rows look alive
    with pytest.raises(SchedulerConflict, match=f"job {first.job_id}, pid .*use PostgreSQL"):
        second.start()
    first.start()
    first.stop()
    second.stop(state="failed")
