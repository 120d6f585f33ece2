"""Recovery: dead scheduler jobs, orphaned and stuck-in-queued task instances, and a
scheduler process SIGKILLed mid-run then restarted."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from airdask.config import Config, load_config
from airdask.dag import DAG, BashTask
from airdask.executors import BaseExecutor, load_executor
from airdask.executors.local import LocalExecutor
from airdask.executors.sequential import SequentialExecutor
from airdask.scheduler import recovery
from airdask.scheduler.loop import SchedulerJob
from airdask.scheduler.runs import create_run, start_run
from airdask.store import Job, Log, Store, TaskInstance, utcnow
from proc_support import wait_for
from sched_support import (
    cli,
    log_events,
    make_store,
    run_state,
    scheduler_process,
    tis_of,
)
from task_funcs import ledger_step_source, read_ledger


@pytest.fixture
def store(config: Config) -> Store:
    return make_store(config)


def _dead_job(store: Store, *, age: float) -> int:
    with store.session() as session:
        job = Job(state="running", hostname="gone", pid=1, latest_heartbeat=utcnow())
        job.latest_heartbeat = utcnow() - timedelta(seconds=age)
        session.add(job)
        session.flush()
        return job.id


def _run_owned_by(store: Store, dag: DAG, job_id: int, live: dict[str, str]) -> str:
    """A running run whose TIs in ``live`` are queued/running under ``job_id``."""
    with store.session() as session:
        run = create_run(session, dag, scheduled_by_job_id=job_id)
        start_run(session, run, dag)
        session.flush()
        for ti in session.scalars(select(TaskInstance).where(TaskInstance.run_id == run.run_id)):
            if ti.task_id in live:
                ti.state, ti.try_number, ti.queued_by_job_id = live[ti.task_id], 1, job_id
                ti.queued_dttm = utcnow()
            elif ti.task_id == "root":
                ti.state, ti.try_number = "success", 1
        return run.run_id


def _dag() -> DAG:
    with DAG("orphans") as dag:
        root = BashTask("root", "true")
        root >> [BashTask("q", "echo q"), BashTask("r", "echo r"), BashTask("w", "echo w")]
    return dag


def test_orphans_of_a_dead_job_are_reset_and_rerun(store: Store, config: Config) -> None:
    dead = _dead_job(store, age=120)
    dag = _dag()
    run_id = _run_owned_by(store, dag, dead, {"q": "queued", "r": "running"})
    executor = load_executor("SequentialExecutor", config=config)
    job = SchedulerJob(store=store, executor=executor, config=config, dags={"orphans": dag})
    deadline = time.monotonic() + 30

    def done() -> bool:
        assert time.monotonic() < deadline, "run did not finish"
        return run_state(store, "orphans", run_id) == "success"

    job.run(until=done, handle_signals=False)
    tis = tis_of(store, "orphans", run_id)
    assert {t: (ti.state, ti.try_number) for t, ti in tis.items()} == {
        "root": ("success", 1),
        "q": ("success", 2),
        "r": ("success", 2),
        "w": ("success", 1),
    }
    assert tis["q"].max_tries == 1  # a reset is not the task's fault: one more try
    resets = {e.task_id for e in log_events(store, "orphans", event="orphan_reset")}
    assert resets == {"q", "r"}
    with store.session() as session:
        assert session.get(Job, dead).state == "failed"  # type: ignore[union-attr]


def test_tis_of_a_live_job_are_left_alone(store: Store, config: Config) -> None:
    live_job = _dead_job(store, age=0)
    dag = _dag()
    run_id = _run_owned_by(store, dag, live_job, {"q": "queued"})
    executor = load_executor("SequentialExecutor", config=config)
    job = SchedulerJob(store=store, executor=executor, config=config)
    job.register()
    with store.session() as session:
        report = recovery.adopt_or_reset_orphans(
            session, executor, job_id=job.job_id or 0, threshold=30
        )
    assert report.dead_jobs == [] and report.reset == []
    assert tis_of(store, "orphans", run_id)["q"].state == "queued"


def test_stuck_in_queued_is_revoked_rescheduled_then_failed(store: Store, config: Config) -> None:
    dag = _dag()
    executor = load_executor("LocalExecutor", config=config, parallelism=2)
    job = SchedulerJob(store=store, executor=executor, config=config)
    job_id = job.register()
    run_id = _run_owned_by(store, dag, job_id, {"q": "queued"})

    def stuck_pass() -> recovery.RecoveryReport:
        with store.session() as session:
            ti = session.get(TaskInstance, ("orphans", "q", run_id, -1))
            assert ti is not None
            ti.state, ti.queued_dttm = "queued", utcnow() - timedelta(seconds=60)
        with store.session() as session:
            return recovery.handle_stuck_queued(
                session, executor, job_id=job_id, timeout=10, max_reschedules=2
            )

    first = stuck_pass()
    assert len(first.rescheduled) == 1
    ti = tis_of(store, "orphans", run_id)["q"]
    assert (ti.state, ti.stuck_in_queued_count) == ("scheduled", 1)
    assert "stuck in queued for more than 10s" in (ti.reason or "")
    assert len(stuck_pass().rescheduled) == 1
    third = stuck_pass()
    assert len(third.failed) == 1
    ti = tis_of(store, "orphans", run_id)["q"]
    assert ti.state == "failed" and "3 times; giving up" in (ti.reason or "")
    # a TI queued recently is not stuck
    with store.session() as session:
        fresh = recovery.handle_stuck_queued(
            session, executor, job_id=job_id, timeout=3600, max_reschedules=2
        )
    assert fresh.rescheduled == [] and fresh.failed == []


RECOVER_DAG = """
from airdask.dag import DAG, BashTask

{step}

with DAG("recover") as dag:
    start = BashTask("start", "echo start")
    middle = [BashTask(f"m{{i}}", step(f"m{{i}}", 1.5)) for i in range(8)]
    end = BashTask("end", "echo end")
    start >> middle >> end
"""


RECOVER_ENV = {
    "AIRDASK__SCHEDULER__JOB_HEARTBEAT_SEC": "0.2",
    "AIRDASK__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "2",
    "AIRDASK__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "0.5",
}


def _sigkill_mid_run_then_restart(
    tmp_path: Path, env: dict[str, str], *, finish_timeout: float
) -> tuple[Store, Path, float]:
    """Trigger ``recover``, SIGKILL the scheduler once four tasks have started, start another
    and wait for the run to end; check what holds whatever the executor: the run and every TI
    succeeded, one success per TI in the event trail and one ``end`` per task in the ledger.
    Returns the store, the ledger and when the first scheduler was killed."""
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    ledger = tmp_path / "ledger"
    (home / "dags" / "recover.py").write_text(RECOVER_DAG.format(step=ledger_step_source(ledger)))
    env = {**RECOVER_ENV, **env}
    trig = cli("dags", "trigger", "recover", "--run-id", "r1", home=home, env=env)
    assert trig.returncode == 0, trig.stderr
    store = Store.from_config(load_config({"AIRDASK_HOME": str(home)}))

    first = scheduler_process(home, env)
    try:
        wait_for(
            lambda: sum(1 for r in read_ledger(str(ledger)) if r[0] == "start") >= 4,
            timeout=60,
            what="four tasks to start under the first scheduler",
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    killed_at = time.time()
    second = scheduler_process(home, env)
    try:
        wait_for(
            lambda: run_state(store, "recover", "r1") in ("success", "failed"),
            timeout=finish_timeout,
            what="the run to finish under the restarted scheduler",
        )
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert run_state(store, "recover", "r1") == "success"
    tis = tis_of(store, "recover", "r1")
    assert {ti.state for ti in tis.values()} == {"success"}
    # no attempt succeeded twice: one success per TI in the event trail and in the ledger
    successes = Counter(e.task_id for e in log_events(store, "recover", event="success"))
    assert set(successes.values()) == {1} and len(successes) == 10
    ends = Counter(name for kind, name, _ in read_ledger(str(ledger)) if kind == "end")
    assert set(ends.values()) == {1} and len(ends) == 8
    return store, ledger, killed_at


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_scheduler_sigkilled_mid_run_then_restarted(tmp_path: Path) -> None:
    env = {"AIRDASK__CORE__EXECUTOR": "LocalExecutor", "AIRDASK__CORE__PARALLELISM": "4"}
    store, ledger, killed_at = _sigkill_mid_run_then_restart(tmp_path, env, finish_timeout=90)
    tis = tis_of(store, "recover", "r1")
    # the attempts cut short by the kill did not finish after it, and were run again
    reset = {e.task_id for e in log_events(store, "recover", event="orphan_reset")}
    assert reset, "the restarted scheduler should have reset the dead job's task instances"
    assert all(tis[t].try_number == 2 for t in reset)
    late_ends = [
        name
        for kind, name, stamp in read_ledger(str(ledger))
        if kind == "end" and stamp > killed_at
    ]
    assert set(late_ends) >= reset
    with store.session() as session:
        jobs = session.scalars(select(Job).order_by(Job.id)).all()
    assert [j.state for j in jobs] == ["failed", "success"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_dask_attempts_are_adopted_after_a_scheduler_sigkill(tmp_path: Path) -> None:
    from dask_support import external_cluster

    with external_cluster(tmp_path) as cluster:
        cluster.start_worker(nthreads=2)
        cluster.start_worker(nthreads=2)
        env = {
            "AIRDASK__CORE__EXECUTOR": "DaskExecutor",
            "AIRDASK__DASK__CLUSTER_ADDRESS": cluster.address,
        }
        store, ledger, _ = _sigkill_mid_run_then_restart(tmp_path, env, finish_timeout=120)
    tis = tis_of(store, "recover", "r1")
    # attempts running on Dask when the scheduler died were adopted, not run again
    adopted = {e.task_id for e in log_events(store, "recover", event="adopted")}
    assert adopted, "the restarted scheduler should have adopted the running attempts"
    assert all(tis[t].try_number == 1 for t in adopted)
    starts = Counter(name for kind, name, _ in read_ledger(str(ledger)) if kind == "start")
    assert all(starts[t] == 1 for t in adopted)


class AdoptionFailsOnce(SequentialExecutor):
    """Its first ``try_adopt_task_instances`` fails (as when its cluster cannot be asked)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls = 0

    def try_adopt_task_instances(self, tis: Sequence[TaskInstance]) -> Sequence[TaskInstance]:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("the cluster did not answer")
        return tis


def test_a_failed_adoption_resets_nothing(store: Store, config: Config) -> None:
    dead = _dead_job(store, age=120)
    dag = _dag()
    run_id = _run_owned_by(store, dag, dead, {"q": "queued", "r": "running"})
    executor = AdoptionFailsOnce(config=config)
    job = SchedulerJob(store=store, executor=executor, config=config)
    job_id = job.register()

    def check() -> recovery.RecoveryReport:
        with store.session() as session:
            return recovery.adopt_or_reset_orphans(session, executor, job_id=job_id, threshold=30)

    first = check()
    assert first.reset == [] and len(first.deferred) == 2
    tis = tis_of(store, "orphans", run_id)
    # what the executor could not look at may still run: left exactly as it was
    assert {t: (tis[t].state, tis[t].queued_by_job_id) for t in "qr"} == {
        "q": ("queued", dead),
        "r": ("running", dead),
    }
    with store.session() as session:
        [failed] = session.scalars(select(Log).where(Log.event == "adopt_failed")).all()
    assert "the cluster did not answer" in (failed.extra or "")
    second = check()  # the next check asks again; this time it answers (adopts nothing)
    assert len(second.reset) == 2
    assert {tis_of(store, "orphans", run_id)[t].state for t in "qr"} == {None}


class RevokeFailsOnce(LocalExecutor):
    """Its first revoke fails (as when its cluster cannot be reached)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.revokes = 0

    def revoke_task(self, *, ti: TaskInstance) -> None:
        self.revokes += 1
        if self.revokes <= 2:  # cleanup_stuck_queued_tasks, then the one-by-one retry
            raise ConnectionError("the cluster did not answer")
        super().revoke_task(ti=ti)


class CannotWithdraw(BaseExecutor):
    """Implements only the mandatory methods: cleanup and revoke are not supported."""

    def execute_async(self, *args: Any, **kwargs: Any) -> None:
        pass

    def sync(self) -> None:
        pass


def _stuck(store: Store, job_id: int, run_id: str) -> None:
    with store.session() as session:
        ti = session.get(TaskInstance, ("orphans", "q", run_id, -1))
        assert ti is not None
        ti.state, ti.queued_dttm = "queued", utcnow() - timedelta(seconds=60)


def test_a_stuck_task_whose_revoke_failed_stays_queued(store: Store, config: Config) -> None:
    executor = RevokeFailsOnce(config=config, parallelism=2)
    job = SchedulerJob(store=store, executor=executor, config=config)
    job_id = job.register()
    run_id = _run_owned_by(store, _dag(), job_id, {"q": "queued"})
    _stuck(store, job_id, run_id)

    def check() -> recovery.RecoveryReport:
        with store.session() as session:
            return recovery.handle_stuck_queued(
                session, executor, job_id=job_id, timeout=10, max_reschedules=2
            )

    first = check()
    assert first.rescheduled == [] and len(first.deferred) == 1
    ti = tis_of(store, "orphans", run_id)["q"]
    assert (ti.state, ti.stuck_in_queued_count, ti.try_number) == ("queued", 0, 1)
    [kept] = log_events(store, "orphans", event="stuck_in_queued_kept")
    assert "revoking it failed (ConnectionError: the cluster did not answer)" in (kept.extra or "")
    second = check()  # the revoke works now: withdrawn, then scheduled again
    assert len(second.rescheduled) == 1
    assert tis_of(store, "orphans", run_id)["q"].state == "scheduled"
    executor.end()


def test_an_executor_that_cannot_withdraw_gets_its_stuck_tasks_rescheduled(
    store: Store, config: Config
) -> None:
    executor = CannotWithdraw(config=config)
    job = SchedulerJob(store=store, executor=executor, config=config)
    job_id = job.register()
    run_id = _run_owned_by(store, _dag(), job_id, {"q": "queued"})
    _stuck(store, job_id, run_id)
    with store.session() as session:
        report = recovery.handle_stuck_queued(
            session, executor, job_id=job_id, timeout=10, max_reschedules=2
        )
    assert len(report.rescheduled) == 1 and report.deferred == []
    assert tis_of(store, "orphans", run_id)["q"].state == "scheduled"
