"""Scheduled runs driven by a fake clock handed to the scheduler (no sleeping, no patching)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from airdask.config import Config
from airdask.dag import DAG, BashTask
from airdask.executors import load_executor
from airdask.scheduler.loop import SchedulerJob
from airdask.store import DagModel, DagRun, Store
from sched_support import make_store

UTC = timezone.utc
T0 = datetime(2024, 1, 1, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def store(config: Config) -> Store:
    return make_store(config)


def hourly(dag_id: str = "hourly", **kwargs: object) -> DAG:
    with DAG(dag_id, schedule="@hourly", start_date=T0, **kwargs) as dag:  # type: ignore[arg-type]
        BashTask("t", "true")
    return dag


@pytest.fixture
def scheduler(store: Store, config: Config) -> Iterator[tuple[SchedulerJob, FakeClock]]:
    made: list[SchedulerJob] = []

    def make(dag: DAG) -> tuple[SchedulerJob, FakeClock]:
        clock = FakeClock(T0)
        executor = load_executor("SequentialExecutor", config=config)
        job = SchedulerJob(
            store=store, executor=executor, config=config, dags={dag.dag_id: dag}, clock=clock
        )
        job.start()
        made.append(job)
        return job, clock

    yield make  # type: ignore[misc]
    for job in made:
        job.stop()


def runs(store: Store, dag_id: str) -> list[DagRun]:
    with store.session() as session:
        return list(
            session.scalars(
                select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.logical_date)
            )
        )


def drain(job: SchedulerJob, passes: int = 50) -> None:
    """Pass until nothing moves (the clock stands still meanwhile)."""
    for _ in range(passes):
        if not job.run_once().busy:
            return


def test_catchup_creates_a_run_per_missed_interval(scheduler, store: Store) -> None:  # type: ignore[no-untyped-def]
    job, clock = scheduler(hourly(catchup=True))
    assert job.run_once().created_runs == 0  # the first interval is not over yet
    clock.advance(hours=3)
    drain(job)
    got = runs(store, "hourly")
    assert [r.logical_date for r in got] == [T0 + timedelta(hours=h) for h in range(3)]
    assert got[0].run_id == "scheduled__2024-01-01T00:00:00+00:00"
    assert all(r.data_interval_end - r.data_interval_start == timedelta(hours=1) for r in got)  # type: ignore[operator]
    assert {r.state for r in got} == {"success"}
    clock.advance(minutes=59)
    drain(job)
    assert len(runs(store, "hourly")) == 3  # the 4th interval ends at 04:00
    clock.advance(minutes=1)
    drain(job)
    assert len(runs(store, "hourly")) == 4


def test_no_catchup_creates_only_the_latest_interval(scheduler, store: Store) -> None:  # type: ignore[no-untyped-def]
    job, clock = scheduler(hourly())
    clock.advance(hours=3)
    drain(job)
    got = runs(store, "hourly")
    assert [(r.data_interval_start, r.data_interval_end) for r in got] == [
        (T0 + timedelta(hours=2), T0 + timedelta(hours=3))
    ]
    clock.advance(hours=5)  # the scheduler was away: still one run, the latest
    drain(job)
    assert [r.logical_date for r in runs(store, "hourly")][-1] == T0 + timedelta(hours=7)
    assert len(runs(store, "hourly")) == 2


def test_pause_stops_creation_and_unpause_resumes(scheduler, store: Store) -> None:  # type: ignore[no-untyped-def]
    job, clock = scheduler(hourly(catchup=True))
    job.run_once()  # writes the DAG's row
    with store.session() as session:
        row = session.get(DagModel, "hourly")
        assert row is not None and row.next_dagrun_create_after == T0 + timedelta(hours=1)
        row.is_paused = True
    clock.advance(hours=3)
    drain(job)
    assert runs(store, "hourly") == []
    with store.session() as session:
        session.get(DagModel, "hourly").is_paused = False  # type: ignore[union-attr]
    drain(job)
    assert len(runs(store, "hourly")) == 3  # catchup: the paused hours are owed


def test_max_active_runs_limits_creation(scheduler, store: Store) -> None:  # type: ignore[no-untyped-def]
    job, clock = scheduler(hourly(catchup=True, max_active_runs=2))
    job.run_once()  # writes the DAG's row
    clock.advance(hours=5)
    with store.session() as session:
        created = job.schedules.create_due(session)
    assert created == 2  # two are active now; the other three wait for them
    assert {r.state for r in runs(store, "hourly")} == {"queued"}
    drain(job)
    assert [r.state for r in runs(store, "hourly")] == ["success"] * 5


def test_manual_runs_do_not_stand_in_for_the_schedule(scheduler, store: Store) -> None:  # type: ignore[no-untyped-def]
    from airdask.scheduler.runs import create_run

    dag = hourly(catchup=True)
    job, clock = scheduler(dag)
    with store.session() as session:
        create_run(session, dag)
    clock.advance(hours=1)
    drain(job)
    ids = sorted(r.run_id for r in runs(store, "hourly"))
    assert ids[0].startswith("manual__") and ids[1] == "scheduled__2024-01-01T00:00:00+00:00"


def test_queued_runs_wait_for_max_active_runs(scheduler, store: Store) -> None:  # type: ignore[no-untyped-def]
    from airdask.scheduler.runs import create_run

    with DAG("one_at_a_time", max_active_runs=1) as dag:
        BashTask("t", "true")
    job, _ = scheduler(dag)
    with store.session() as session:
        for _ in range(3):
            create_run(session, dag)
    with store.session() as session:
        started = job._start_queued_runs(session)
    assert started == 1
    assert sorted(r.state for r in runs(store, "one_at_a_time")) == ["queued", "queued", "running"]
    drain(job)
    assert [r.state for r in runs(store, "one_at_a_time")] == ["success"] * 3


@pytest.mark.postgres
def test_two_schedulers_create_each_run_once(pg_url: str, config: Config) -> None:
    """Two schedulers on one PostgreSQL database, passing at the same time with the same
    clock: every due interval gets exactly one run (the dag row is locked SKIP LOCKED)."""
    import threading

    from airdask.store import init_db

    store = Store.from_url(pg_url)
    init_db(store)
    dag = hourly("ha", catchup=True)
    clock = FakeClock(T0 + timedelta(hours=6))
    jobs = []
    for _ in range(2):
        executor = load_executor("SequentialExecutor", config=config)
        job = SchedulerJob(
            store=store, executor=executor, config=config, dags={dag.dag_id: dag}, clock=clock
        )
        job.start()
        jobs.append(job)
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def passes(job: SchedulerJob) -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(15):
                job.run_once()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=passes, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    for job in jobs:
        job.stop()
    assert not errors, errors
    got = runs(store, "ha")
    assert [r.logical_date for r in got] == [T0 + timedelta(hours=h) for h in range(6)]
    store.dispose()


def test_a_scheduled_run_knows_its_interval(store: Store, config: Config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Templates and the environment of a scheduled run's task see its logical date and data
    interval: a daily DAG in Paris runs from local midnight to local midnight (23:00 UTC,
    then 22:00 UTC once the clocks went forward), and ``ds`` is the UTC date, as in Airflow."""
    from zoneinfo import ZoneInfo

    out = tmp_path / "seen.txt"
    paris = datetime(2024, 3, 30, tzinfo=ZoneInfo("Europe/Paris"))
    with DAG("daily_tz", schedule="@daily", start_date=paris, catchup=True) as dag:
        BashTask(
            "t",
            f'echo "{{{{ ds }}}} {{{{ data_interval_end }}}} $AIRDASK_CTX_LOGICAL_DATE" >> {out}',
        )
    clock = FakeClock(paris + timedelta(days=2, hours=1))
    executor = load_executor("SequentialExecutor", config=config)
    job = SchedulerJob(
        store=store, executor=executor, config=config, dags={dag.dag_id: dag}, clock=clock
    )
    job.start()
    try:
        drain(job)
    finally:
        job.stop()
    lines = sorted(out.read_text().splitlines())
    assert lines == [
        "2024-03-29 2024-03-30 23:00:00+00:00 2024-03-29T23:00:00+00:00",
        "2024-03-30 2024-03-31 22:00:00+00:00 2024-03-30T23:00:00+00:00",
    ]
