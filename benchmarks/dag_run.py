"""Scheduler benchmarks (issue 5).

1. ``airdask run`` of a 50-task DAG (start >> 48 echo >> end) on a Dask cluster of 2 workers
   x 2 threads (the embedded LocalCluster by default, or ``--cluster ADDRESS``); prints the
   wall time from trigger (DagRun.queued_at) to the run's end (DagRun.end_date), and the
   command's total wall time. Target on a 2-core machine: <= 2.5 s.
2. One scheduler pass with 10,000 task instances in SQLite (9,500 finished in 19 earlier
   runs, 500 ready in the current run): trigger rules evaluated, 500 queued, 500 outcomes
   persisted, the run finished. Target: <= 100 ms. The executor of that pass is
   :class:`InstantExecutor`, which reports success at once without running anything, so the
   number is the scheduler's own cost (database and bookkeeping), not the tasks'.

Usage::

    python benchmarks/dag_run.py [--executor NAME] [--cluster ADDRESS] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from airdask.config import load_config
from airdask.dag import DAG, BashTask
from airdask.executors.base import BaseExecutor
from airdask.executors.events import EventInfo
from airdask.scheduler.loop import SchedulerJob
from airdask.scheduler.runs import create_run
from airdask.state import TaskInstanceKey
from airdask.store import DagRun, Store, TaskInstance, init_db, utcnow

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


def _pass_db(tmp: str, *, scheduled: bool, history: int = 19) -> tuple[Store, Any, DAG]:
    """9,500 finished TIs in 19 runs, and a current run of 500 TIs: already ``scheduled``
    (ready to queue) or a fresh queued run (its TIs created and evaluated in the pass)."""
    config = load_config({"AIRDASK_HOME": tmp})
    store = Store.from_config(config)
    init_db(store, default_pool_slots=1000)  # the pool must not be the limit
    with DAG("wide") as dag:
        for i in range(500):
            BashTask(f"t{i:03d}", "true")
    now = utcnow()
    with store.session() as session:
        for n in range(history + 1 if scheduled else history):
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
        if not scheduled:
            create_run(session, dag, run_id="current")
    return store, config, dag


def bench_pass(repeat: int, *, scheduled: bool, history: int = 19) -> list[float]:
    times = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            store, config, dag = _pass_db(tmp, scheduled=scheduled, history=history)
            executor = InstantExecutor(config=config)
            job = SchedulerJob(store=store, executor=executor, config=config, dags={"wide": dag})
            job.start()
            if scheduled:
                job.dirty.clear()  # as in a steady state: nothing to re-evaluate
            t0 = time.perf_counter()
            result = job.run_once()
            elapsed = time.perf_counter() - t0
            job.stop()
            with store.session() as session:
                total = session.query(TaskInstance).count()
                state = session.get(DagRun, ("wide", "current")).state  # type: ignore[union-attr]
            assert result.queued == 500 and state == "success", (result, state)
            times.append(elapsed)
            print(f"    {total} TIs in the DB: {elapsed * 1000:.1f} ms")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executor", help="executor for `airdask run` (default: [core])")
    parser.add_argument("--cluster", help="Dask scheduler address (default: embedded)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-run", action="store_true", help="only the pass benchmark")
    args = parser.parse_args()
    if not args.skip_run:
        print("airdask run, 50-task DAG (start >> 48 echo >> end), 2 workers x 2 threads:")
        runs = bench_run(args)
        print(
            f"  median trigger -> end: {statistics.median(runs):.2f} s, best {min(runs):.2f} s "
            "(target <= 2.5 s)"
        )
    print("scheduler pass, SQLite, 10,000 task instances (9,500 finished):")
    print("  500 scheduled TIs -> queued, executed, outcomes persisted, run finished:")
    passes = bench_pass(args.repeat, scheduled=True)
    print(
        f"  median pass: {statistics.median(passes) * 1000:.1f} ms, best "
        f"{min(passes) * 1000:.1f} ms (target <= 100 ms)"
    )
    print("  the same with no history (only the 500 ready TIs in the DB):")
    empty = bench_pass(args.repeat, scheduled=True, history=0)
    print(
        f"  median pass: {statistics.median(empty) * 1000:.1f} ms, best {min(empty) * 1000:.1f} ms"
    )
    print("  the same, plus creating the run's 500 TIs and evaluating their trigger rules:")
    fresh = bench_pass(args.repeat, scheduled=False)
    print(
        f"  median pass: {statistics.median(fresh) * 1000:.1f} ms, best {min(fresh) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
