"""Two schedulers racing on one PostgreSQL database: the row-lock claims, made to collide.

Each test holds one side inside its transaction (a task whose ``command()`` waits for a
gate, or an open session), lets the other side run into it, and checks that the other side
skips or waits, never takes the same thing. ``pg_stat_activity`` tells when a side is
waiting on a lock: no sleeps.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from airdask.commands import Command
from airdask.config import Config, load_config
from airdask.dag import DAG, BashTask, CommandTask
from airdask.executors import load_executor
from airdask.executors.events import EventInfo
from airdask.scheduler import recovery
from airdask.scheduler.events import apply_events
from airdask.scheduler.jobs import RUN, SCHEDULER
from airdask.scheduler.loop import PassResult, SchedulerJob
from airdask.scheduler.runs import create_run, start_run
from airdask.state import TaskInstanceState
from airdask.store import Job, Log, Pool, Store, TaskInstance, init_db, utcnow
from proc_support import wait_for
from sched_support import log_events, run_state, tis_of
from task_funcs import read_ledger

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]
S = TaskInstanceState


@pytest.fixture
def pg_config(home: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("AIRDASK__DATABASE__SQL_ALCHEMY_CONN", pg_url)
    return load_config()


@pytest.fixture
def store(pg_config: Config) -> Iterator[Store]:
    store = Store.from_config(pg_config)
    init_db(store, default_pool_slots=128)
    yield store
    store.dispose()


class Gate:
    """Holds the first caller of :meth:`pass_through` until :meth:`open`; later ones pass."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._open = threading.Event()
        self._lock = threading.Lock()
        self._taken = False

    def pass_through(self) -> None:
        with self._lock:
            first, self._taken = not self._taken, True
        if first:
            self.entered.set()
            assert self._open.wait(60), "the gate was never opened"

    def open(self) -> None:
        self._open.set()


class GatedTask(CommandTask):
    """A task whose command, built inside the scheduler's queueing transaction, waits for a
    gate: the scheduler building it holds its locks meanwhile."""

    def __init__(self, task_id: str, argv: list[str], *, gate: Gate, **kwargs: Any) -> None:
        self.gate = gate
        super().__init__(task_id, argv, **kwargs)

    def command(self) -> Command:
        self.gate.pass_through()
        return super().command()


class Side(threading.Thread):
    """``work()`` in a thread, keeping its result or exception."""

    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as exc:
            self.error = exc

    def outcome(self) -> Any:
        self.join(60)
        assert not self.is_alive(), "the side never finished"
        if self.error is not None:
            raise self.error
        return self.result


def lock_waiters(store: Store) -> int:
    """Sessions of this database waiting for a lock another one holds."""
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def blocked_or_done(store: Store, side: Side) -> None:
    wait_for(
        lambda: not side.is_alive() or lock_waiters(store) > 0,
        timeout=30,
        what="the second side to finish or wait for a lock",
    )


def scheduler(
    store: Store, config: Config, dag: DAG, executor_name: str = "SequentialExecutor", **kw: Any
) -> SchedulerJob:
    executor = load_executor(executor_name, config=config, **kw)
    job = SchedulerJob(store=store, executor=executor, config=config, dags={dag.dag_id: dag})
    job.start()
    return job


def ledger_dag(dag_id: str, ledger: Path, gate: Gate, count: int, **task_kwargs: Any) -> DAG:
    with DAG(dag_id) as dag:
        for i in range(count):
            argv = ["bash", "-c", f"echo 'start t{i} 0 $$' >> {ledger}"]
            GatedTask(f"t{i}", argv, gate=gate, **task_kwargs)
    return dag


def test_a_queued_run_is_started_by_one_scheduler(
    store: Store, pg_config: Config, tmp_path: Path
) -> None:
    gate, ledger = Gate(), tmp_path / "ledger"
    dag = ledger_dag("race", ledger, gate, 6)
    first, second = scheduler(store, pg_config, dag), scheduler(store, pg_config, dag)
    with store.session() as session:
        run_id = create_run(session, dag).run_id
    side_a = Side(first.run_once)
    side_a.start()
    assert gate.entered.wait(30), "the first scheduler never reached its queueing step"
    # The first holds the new run (started, not committed), the pool rows and its TIs.
    side_b = Side(second.run_once)
    side_b.start()
    blocked_or_done(store, side_b)
    gate.open()
    a: PassResult = side_a.outcome()
    b: PassResult = side_b.outcome()  # the old code: IntegrityError on task_instance_pkey
    assert (a.started_runs, b.started_runs) == (1, 0)
    # One at a time each (SequentialExecutor): both share the run to its end.
    for _ in range(12):
        if run_state(store, "race", run_id) == "success":
            break
        first.run_once()
        second.run_once()
    assert run_state(store, "race", run_id) == "success"
    tis = tis_of(store, "race", run_id)
    assert {t: (ti.state, ti.try_number) for t, ti in tis.items()} == {
        f"t{i}": ("success", 1) for i in range(6)
    }
    assert {ti.queued_by_job_id for ti in tis.values()} == {first.job_id, second.job_id}
    starts = Counter(name for _, name, _ in read_ledger(str(ledger)))
    assert starts == Counter({f"t{i}": 1 for i in range(6)})
    first.stop()
    second.stop()


def test_ready_task_instances_are_queued_once_within_the_pool(
    store: Store, pg_config: Config, tmp_path: Path
) -> None:
    gate, ledger = Gate(), tmp_path / "ledger"
    with store.session() as session:
        session.add(Pool(name="p", slots=3))
    dag = ledger_dag("pool_race", ledger, gate, 6, pool="p")
    first, second = (
        scheduler(store, pg_config, dag, "LocalExecutor", parallelism=8) for _ in range(2)
    )
    with store.session() as session:
        run = create_run(session, dag)
        start_run(session, run, dag)
        run_id = run.run_id
    with store.session() as session:  # every TI ready: only the pool limits the pass
        for ti in session.scalars(select(TaskInstance).where(TaskInstance.run_id == run_id)):
            ti.state = S.SCHEDULED.value
    first.dirty.clear()
    second.dirty.clear()
    side_a = Side(first.run_once)
    side_a.start()
    assert gate.entered.wait(30)
    side_b = Side(second.run_once)
    side_b.start()
    blocked_or_done(store, side_b)
    # While the first holds the pool, the second has queued nothing.
    with store.session() as session:
        live = session.scalars(
            select(TaskInstance).where(TaskInstance.state.in_(["queued", "running"]))
        ).all()
    assert live == []
    gate.open()
    a, b = side_a.outcome(), side_b.outcome()
    first.stop()  # waits for the attempts and records them
    second.stop()
    # The second counted the first's three as using the pool, except those already
    # recorded as finished by then.
    assert a.queued == 3 and b.queued <= 3
    tis = tis_of(store, "pool_race", run_id)
    queued_by = Counter(ti.queued_by_job_id for ti in tis.values() if ti.try_number)
    assert queued_by == Counter(
        {first.job_id: 3, second.job_id: b.queued} if b.queued else {first.job_id: 3}
    )
    assert all(ti.try_number <= 1 for ti in tis.values())
    # every command ran at most once (the old code: the same three, twice)
    starts = Counter(name for _, name, _ in read_ledger(str(ledger)))
    assert set(starts.values()) == {1} and len(starts) == 3 + b.queued


def _orphans_of_dead_job(store: Store, *, count: int, job_state: str) -> tuple[int, str]:
    """A job with a stale heartbeat (``job_state``) and a running run whose ``count`` TIs
    it had queued."""
    with DAG("orphans") as dag:
        for i in range(count):
            BashTask(f"o{i}", "true")
    with store.session() as session:
        dead = Job(job_type=SCHEDULER, state=job_state, hostname="gone", pid=1)
        dead.latest_heartbeat = utcnow() - timedelta(seconds=600)
        session.add(dead)
        session.flush()
        run = create_run(session, dag)
        start_run(session, run, dag)
        session.flush()
        for ti in session.scalars(select(TaskInstance).where(TaskInstance.run_id == run.run_id)):
            ti.state, ti.try_number, ti.queued_by_job_id = "running", 1, dead.id
        return dead.id, run.run_id


def _survivor(store: Store) -> int:
    with store.session() as session:
        job = Job(job_type=SCHEDULER, state="running", hostname="here", pid=2)
        session.add(job)
        session.flush()
        return job.id


def _recover_in_thread(store: Store, config: Config, job_id: int) -> Side:
    def work() -> recovery.RecoveryReport:
        executor = load_executor("SequentialExecutor", config=config)
        with store.session() as session:
            return recovery.adopt_or_reset_orphans(session, executor, job_id=job_id, threshold=30)

    side = Side(work)
    side.start()
    return side


@pytest.mark.parametrize("job_state", ["running", "failed"])
def test_two_survivors_never_recover_the_same_orphan(
    store: Store, pg_config: Config, job_state: str
) -> None:
    """``running``: both survivors find the dead job still marked running; ``failed``: it was
    already declared dead, and the second must skip the locked orphans without waiting."""
    dead, run_id = _orphans_of_dead_job(store, count=8, job_state=job_state)
    b, c = _survivor(store), _survivor(store)
    executor = load_executor("SequentialExecutor", config=pg_config)
    with store.session() as session:
        first = recovery.adopt_or_reset_orphans(session, executor, job_id=b, threshold=30)
        assert len(first.reset) == 8
        side = _recover_in_thread(store, pg_config, c)  # the other survivor, at the same time
        blocked_or_done(store, side)
        if job_state == "failed":
            assert not side.is_alive(), "the second survivor waited for locked orphans"
    second = side.outcome()
    assert second.reset == [] and second.adopted == [] and second.dead_jobs == []
    assert first.dead_jobs == ([dead] if job_state == "running" else [])
    resets = Counter(e.task_id for e in log_events(store, "orphans", event="orphan_reset"))
    assert resets == Counter({f"o{i}": 1 for i in range(8)})
    tis = tis_of(store, "orphans", run_id)
    assert {(ti.state, ti.max_tries) for ti in tis.values()} == {(None, 1)}
    with store.session() as session:
        dead_logs = session.scalars(select(Log).where(Log.event == "job_dead")).all()
    assert len(dead_logs) == (1 if job_state == "running" else 0)


def test_events_change_only_what_the_reporting_job_queued(store: Store) -> None:
    _, run_id = _orphans_of_dead_job(store, count=2, job_state="running")
    other = _survivor(store)
    with store.session() as session:
        ti = session.get(TaskInstance, ("orphans", "o0", run_id, -1))
        assert ti is not None
        ti.queued_by_job_id = other  # adopted by another scheduler
        key = ti.key
    with store.session() as session:
        out = apply_events(
            session,
            {key: (S.SUCCESS, EventInfo("exit code 0"))},
            retry_delay=lambda ti: 0.0,
            job_id=other + 1,
        )
    assert out.ignored == 1
    assert tis_of(store, "orphans", run_id)["o0"].state == "running"
    [ignored] = log_events(store, "orphans", event="event_ignored")
    assert f"now queued by job {other}" in (ignored.extra or "")


def test_an_airdask_run_job_is_not_a_scheduler(store: Store, pg_config: Config) -> None:
    """A job with a run filter registers as a RunJob: schedulers leave its runs alone."""
    with DAG("own") as dag:
        BashTask("t", "true")
    executor = load_executor("SequentialExecutor", config=pg_config)
    job = SchedulerJob(store=store, executor=executor, config=pg_config, run_filter=[])
    job.register()
    with store.session() as session:
        run_id = create_run(session, dag, scheduled_by_job_id=job.job_id).run_id
    job.run_filter = [("own", run_id)]
    other = scheduler(store, pg_config, dag)
    assert other.run_once().started_runs == 0
    job.start()
    assert job.run_once().started_runs == 1
    with store.session() as session:
        kinds = dict(session.execute(select(Job.id, Job.job_type)).all())
    assert kinds == {job.job_id: RUN, other.job_id: SCHEDULER}
    job.stop()
    other.stop()


def test_a_run_left_by_a_scheduler_that_stopped_is_looked_at_again(
    store: Store, pg_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last upstream outcome was recorded by a scheduler that then stopped before it
    scheduled what follows: another scheduler, which saw no event of that run, does it at
    its next periodic check."""
    monkeypatch.setenv("AIRDASK__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL", "0")
    config = load_config()
    with DAG("handover") as dag:
        BashTask("up", "true") >> BashTask("down", "true")
    survivor = scheduler(store, config, dag)  # started before the run existed
    with store.session() as session:
        run = create_run(session, dag)
        start_run(session, run, dag)
        session.flush()
        up = session.get(TaskInstance, ("handover", "up", run.run_id, -1))
        assert up is not None
        up.state, up.try_number = "success", 1
        run_id = run.run_id
    survivor.run_once()  # its periodic check finds the run
    for _ in range(3):
        if run_state(store, "handover", run_id) == "success":
            break
        survivor.run_once()
    assert tis_of(store, "handover", run_id)["down"].state == "success"
    assert run_state(store, "handover", run_id) == "success"
    survivor.stop()
