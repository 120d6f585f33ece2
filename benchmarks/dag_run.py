"""Scheduler benchmarks (issue 5).

1. ``airdask run`` of a 50-task DAG (start >> 48 echo >> end) on a Dask cluster of 2 workers
   x 2 threads (the embedded LocalCluster by default, or ``--cluster ADDRESS``); prints the
   wall time from trigger (DagRun.queued_at) to the run's end (DagRun.end_date), and the
   command's total wall time. Target on a 2-core machine: <= 2.5 s.
2. One scheduler pass with 10,000 task instances in SQLite (9,500 finished in 19 earlier
   runs, 500 ready in the current run): trigger rules evaluated, 500 queued, 500 outcomes
   persisted, the run finished. Target: <= 100 ms. The same with 100,000 task instances of
   which 1,000 are ready (issue 12): in 99 earlier runs of 1,000, and all in one run of
   100,000 (``start >> [99,998] >> end``): the first pass after a running scheduler read
   the run (its statements compiled for the first time), and the next one.
   The executor of that pass is :class:`InstantExecutor`, which reports success at once
   without running anything, so the number is the scheduler's own cost (database and
   bookkeeping), not the tasks'. ``[core] parallelism`` is unlimited there, so that a pass
   takes :data:`~airdask.scheduler.loop.MAX_TIS_PER_PASS` TIs. Each pass prints its wall
   time and, in brackets, the CPU time of this process (what the load of a shared machine
   changes least; a PostgreSQL server's own time is not in it). ``--db postgres`` runs the
   pass benchmarks on PostgreSQL (a fresh database per case).

Usage::

    python benchmarks/dag_run.py [--executor NAME] [--cluster ADDRESS] [--repeat N]
        [--skip-run] [--db sqlite|postgres] [--only-100k]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dag_scale import drop_pg, pg_url
from sqlalchemy import insert, select

from airdask.config import load_config
from airdask.dag import DAG, BashTask
from airdask.executors.base import BaseExecutor
from airdask.executors.events import EventInfo
from airdask.scheduler.loop import MAX_TIS_PER_PASS, SchedulerJob
from airdask.scheduler.runs import create_run
from airdask.state import TaskInstanceKey
from airdask.store import DagRun, Store, TaskInstance, init_db, utcnow
from airdask.store.db import analyze_after_insert

DAG_FILE = """
from airdask.dag import DAG, BashTask, CommandTask

with DAG("bench50") as dag:
    start = CommandTask("start", ["echo", "start"])
    middle = [CommandTask(f"echo_{i}", ["echo", str(i)]) for i in range(48)]
    end = CommandTask("end", ["echo", "end"])
    start >> middle >> end
"""


def bench_run(args: argparse.Namespace) -> list[float]:
    times = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            (home / "bench50.py").write_text(DAG_FILE)
            env = {k: v for k, v in os.environ.items() if not k.startswith("AIRDASK")}
            env.update(
                AIRDASK_HOME=str(home),
                AIRDASK__DASK__N_WORKERS="2",
                AIRDASK__DASK__THREADS_PER_WORKER="2",
                AIRDASK__DASK__DASHBOARD_ADDRESS=":0",
            )
            cmd = [sys.executable, "-m", "airdask.cli", "run", str(home / "bench50.py")]
            if args.executor:
                cmd += ["--executor", args.executor]
            if args.cluster:
                cmd += ["--cluster", args.cluster]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            total = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.exit(f"airdask run failed:\n{proc.stdout}\n{proc.stderr}")
            store = Store.from_config(load_config({"AIRDASK_HOME": str(home)}))
            with store.session() as session:
                run = session.scalars(select(DagRun)).one()
                assert run.end_date is not None
                wall = (run.end_date - run.queued_at).total_seconds()
            store.dispose()
            times.append(wall)
            print(f"  50-task DAG: trigger -> end {wall:.2f} s (whole command {total:.2f} s)")
    return times


class InstantExecutor(BaseExecutor):
    """Reports every attempt successful at its next sync, running nothing (bench only)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(0, **kwargs)
        self.todo: list[TaskInstanceKey] = []

    def execute_async(
        self, key: TaskInstanceKey, command: Any, queue: Any = None, executor_config: Any = None
    ) -> None:
        self.todo.append(key)

    def sync(self) -> None:
        now = utcnow()
        for key in self.todo:
            self.success(
                key, EventInfo("exit code 0", hostname="bench", started_at=now, ended_at=now)
            )
        self.todo.clear()

    def end(self) -> None:
        self.sync()


@contextlib.contextmanager
def database(db: str) -> Iterator[str | None]:
    """The ``sql_alchemy_conn`` of one pass benchmark: None (a SQLite file in its home), or
    a fresh PostgreSQL database dropped afterwards."""
    if db == "sqlite":
        yield None
        return
    name = f"airdask_pass_{uuid.uuid4().hex[:8]}"
    url = pg_url(name)
    try:
        yield url
    finally:
        drop_pg(name)


def _pass_config(tmp: str, url: str | None) -> Any:
    """The pass benchmarks' config: ``[core] parallelism`` unlimited, so that a pass hands
    :data:`~airdask.scheduler.loop.MAX_TIS_PER_PASS` to the executor (the default of 32
    would measure a pass of 32)."""
    env = {"AIRDASK_HOME": tmp, "AIRDASK__CORE__PARALLELISM": "0"}
    if url is not None:
        env["AIRDASK__DATABASE__SQL_ALCHEMY_CONN"] = url
    return load_config(env)


def _pass_db(
    tmp: str, url: str | None, *, scheduled: bool, history: int = 19, width: int = 500
) -> tuple[Store, Any, DAG]:
    """``history`` finished runs of ``width`` TIs, and a current run of ``width`` TIs:
    already ``scheduled`` (ready to queue) or a fresh queued run (its TIs created and
    evaluated in the pass)."""
    config = _pass_config(tmp, url)
    store = Store.from_config(config)
    init_db(store, default_pool_slots=width * 2)  # the pool must not be the limit
    with DAG("wide") as dag:
        for i in range(width):
            BashTask(f"t{i:06d}", "true")
    now = utcnow()
    for n in range(history + 1 if scheduled else history):
        with store.session() as session:  # a transaction per run, as when each started
            current = n == history
            run = create_run(session, dag, run_id="current" if current else f"old{n:02d}")
            run.state, run.start_date = ("running" if current else "success"), now
            run.end_date = None if current else now
            state = "scheduled" if current else "success"
            session.execute(
                insert(TaskInstance),
                [
                    {
                        "dag_id": "wide",
                        "task_id": t.task_id,
                        "run_id": run.run_id,
                        "map_index": -1,
                        "try_number": 0 if current else 1,
                        "state": state,
                        "start_date": None if current else now,
                        "end_date": None if current else now,
                        "duration": 0.0,
                    }
                    for t in dag.tasks
                ],
            )
            analyze_after_insert(session, "task_instance", width)  # as start_run does
    if not scheduled:
        with store.session() as session:
            create_run(session, dag, run_id="current")
    return store, config, dag


def _one_big_run(tmp: str, url: str | None, *, size: int, ready: int) -> tuple[Store, Any, DAG]:
    """One running run of ``size`` TIs (``start >> [size - 2] >> end``): ``ready`` of them
    scheduled, ``end`` waiting, the others finished."""
    config = _pass_config(tmp, url)
    store = Store.from_config(config)
    init_db(store, default_pool_slots=ready * 2)
    with DAG("wide") as dag:
        start = BashTask("start", "true")
        middle = [BashTask(f"t{i:06d}", "true") for i in range(size - 2)]
        start >> middle >> BashTask("end", "true")
    now = utcnow()
    with store.session() as session:
        run = create_run(session, dag, run_id="current")
        run.state, run.start_date = "running", now
        rows = []
        for i, task in enumerate(dag.tasks):  # start first: it finished long ago
            state = "scheduled" if 0 < i <= ready else "success"
            state = None if task.task_id == "end" else state
            done = state == "success"
            rows.append(
                {
                    "dag_id": "wide",
                    "task_id": task.task_id,
                    "run_id": "current",
                    "map_index": -1,
                    "try_number": int(done),
                    "state": state,
                    "start_date": now if done else None,
                    "end_date": now if done else None,
                    "duration": 0.0,
                }
            )
        for i in range(0, len(rows), 10_000):
            session.execute(insert(TaskInstance), rows[i : i + 10_000])
        analyze_after_insert(session, "task_instance", len(rows))  # as start_run does
    return store, config, dag


def _settle_wal(store: Store) -> None:
    """Copy the setup's writes out of SQLite's WAL (a checkpoint): the 100,000 rows just
    inserted are not the pass's to checkpoint, which a running scheduler does on a thread of
    its own anyway (:mod:`airdask.store.checkpoints`)."""
    if store.engine.dialect.name == "sqlite":
        with store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


#: (wall, CPU) seconds of one pass.
Timing = tuple[float, float]


def _timed_pass(job: SchedulerJob) -> tuple[Any, Timing]:
    t0, c0 = time.perf_counter(), time.process_time()
    result = job.run_once()
    return result, (time.perf_counter() - t0, time.process_time() - c0)


def _ms(timing: Timing) -> str:
    return f"{timing[0] * 1000:.1f} ms ({timing[1] * 1000:.0f} CPU)"


def bench_big_run(
    repeat: int, db: str, *, size: int, ready: int
) -> tuple[list[Timing], list[Timing]]:
    """Two passes over a run of ``size`` TIs (``start >> [size - 2] >> end``), each queueing,
    executing and recording :data:`~airdask.scheduler.loop.MAX_TIS_PER_PASS` TIs: the first
    after the scheduler started (its statements compiled for the first time), and the next
    one, when ``ready`` TIs are scheduled (the steady state). Returns both timings."""
    first: list[Timing] = []
    steady: list[Timing] = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp, database(db) as url:
            store, config, dag = _one_big_run(tmp, url, size=size, ready=ready + MAX_TIS_PER_PASS)
            executor = InstantExecutor(config=config)
            job = SchedulerJob(store=store, executor=executor, config=config, dags={"wide": dag})
            job.start()
            with store.session() as session:  # a running scheduler has read the run before
                job._evaluate_dirty(session, job._take_dirty())
            gc.collect()  # the setup's garbage is not the pass's to collect
            _settle_wal(store)
            for timings in (first, steady):
                result, timing = _timed_pass(job)
                timings.append(timing)
                assert result.queued == MAX_TIS_PER_PASS, result
            job.stop()
            store.dispose()
            print(
                f"    {size:,} TIs in one run: first pass {_ms(first[-1])}, next pass "
                f"({ready:,} ready) {_ms(steady[-1])}"
            )
    return first, steady


def bench_pass(
    repeat: int, db: str, *, scheduled: bool, history: int = 19, width: int = 500
) -> list[Timing]:
    timings = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp, database(db) as url:
            store, config, dag = _pass_db(
                tmp, url, scheduled=scheduled, history=history, width=width
            )
            executor = InstantExecutor(config=config)
            job = SchedulerJob(store=store, executor=executor, config=config, dags={"wide": dag})
            job.start()
            if scheduled:
                job.dirty.clear()  # as in a steady state: nothing to re-evaluate
            gc.collect()  # the setup's garbage is not the pass's to collect
            _settle_wal(store)
            result, timing = _timed_pass(job)
            job.stop()
            with store.session() as session:
                total = session.query(TaskInstance).count()
                state = session.get(DagRun, ("wide", "current")).state  # type: ignore[union-attr]
            store.dispose()
            # A pass hands at most MAX_TIS_PER_PASS to the executor; the run ends with them.
            taken = min(width, MAX_TIS_PER_PASS)
            assert result.queued == taken, result
            assert state == ("success" if taken == width else "running"), state
            timings.append(timing)
            print(f"    {total} TIs in the DB: {_ms(timing)}")
    return timings


def _median(label: str, timings: list[Timing]) -> None:
    wall = [w for w, _ in timings]
    cpu = statistics.median(c for _, c in timings)
    print(
        f"  {label}median pass: {statistics.median(wall) * 1000:.1f} ms, best "
        f"{min(wall) * 1000:.1f} ms (median CPU {cpu * 1000:.0f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executor", help="executor for `airdask run` (default: [core])")
    parser.add_argument("--cluster", help="Dask scheduler address (default: embedded)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-run", action="store_true", help="only the pass benchmarks")
    parser.add_argument(
        "--db",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the pass benchmarks' database (postgres: $AIRDASK_TEST_PG_URL, default "
        "postgresql+psycopg://postgres@127.0.0.1/test, where a database is made per case)",
    )
    parser.add_argument(
        "--only-100k", action="store_true", help="only the 100,000-TI pass benchmarks"
    )
    args = parser.parse_args()
    if not args.skip_run:
        print("airdask run, 50-task DAG (start >> 48 echo >> end), 2 workers x 2 threads:")
        runs = bench_run(args)
        print(
            f"  median trigger -> end: {statistics.median(runs):.2f} s, best {min(runs):.2f} s "
            "(target <= 2.5 s)"
        )
    db, repeat = args.db, args.repeat
    name = {"sqlite": "SQLite", "postgres": "PostgreSQL"}[db]
    if not args.only_100k:
        print(f"scheduler pass, {name}, 10,000 task instances (9,500 finished):")
        print("  500 scheduled TIs -> queued, executed, outcomes persisted, run finished:")
        _median("", bench_pass(repeat, db, scheduled=True))
        print("  (target <= 100 ms)")
        print("  the same with no history (only the 500 ready TIs in the DB):")
        _median("", bench_pass(repeat, db, scheduled=True, history=0))
        print("  the same, plus creating the run's 500 TIs and evaluating their trigger rules:")
        _median("", bench_pass(repeat, db, scheduled=False))
    print(
        f"scheduler pass, {name}, 100,000 task instances, 1,000 ready (target <= 100 ms; a pass "
        f"takes {MAX_TIS_PER_PASS} of them):"
    )
    print("  99 finished runs of 1,000 and the current run's 1,000 scheduled TIs:")
    _median("", bench_pass(repeat, db, scheduled=True, history=99, width=1000))
    print("  one run of 100,000 (start >> [99,998] >> end), the rest done:")
    first, steady = bench_big_run(repeat, db, size=100_000, ready=1000)
    _median("first ", first)
    _median("next (1,000 ready) ", steady)


if __name__ == "__main__":
    main()
