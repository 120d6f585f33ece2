"""What a 100,000-task run costs to look at (issue 12): ``airdask tasks states``, the
dashboard's data, ``airdask run``'s progress and final report, and the scheduler's memory.

A run of ``start >> [N - 2] >> end`` is written straight into a fresh database (SQLite by
default, ``--db postgres`` for a fresh PostgreSQL database), in the middle of its life:
most task instances succeeded, some failed (with a reason), some are running, queued or
scheduled, ``end`` waits. Then, each ``--repeat`` times, it prints:

* ``tasks states`` (CLI): ``airdask tasks states wide current`` as a subprocess, wall time
  (Python's start-up and imports included: what a user waits for);
* ``tasks states`` (function): :func:`airdask.cli.ti_report.run_report` and printing its
  tables, in this process;
* dashboard data: :func:`airdask.dashboard.summary.build_summary`, what the scheduler
  publishes to the Dask dashboard every couple of seconds;
* progress: the counts by state ``airdask run`` reads every half second;

and once, in a subprocess, a scheduler (with an executor that reports success at once)
that reads the run and passes until nothing is left to queue: its peak RSS above what it
had before it read the run, and the most :class:`~airdask.store.TaskInstance` objects it
held at the end of a pass. Target: each view under a second.

Usage::

    python benchmarks/large_run.py [--size 100000] [--repeat 3] [--db sqlite|postgres]
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from rich.console import Console
from sqlalchemy import insert

from airdask.config import load_config
from airdask.dag import DAG, BashTask
from airdask.store import Store, TaskInstance, init_db, utcnow
from airdask.store.db import analyze_after_insert

#: How many task instances of the run are in each state besides success (``end`` waits).
MIX = {"failed": 100, "running": 32, "queued": 32, "scheduled": 1000}


def make_dag(size: int) -> DAG:
    with DAG("wide") as dag:
        start = BashTask("start", "true")
        middle = [BashTask(f"t{i:06d}", "true") for i in range(size - 2)]
        start >> middle >> BashTask("end", "true")
    return dag


def _env(home: Path, url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRDASK")}
    env.update(AIRDASK_HOME=str(home), AIRDASK__CORE__PARALLELISM="0")
    if url is not None:
        env["AIRDASK__DATABASE__SQL_ALCHEMY_CONN"] = url
    return env


def build(home: Path, url: str | None, size: int) -> Store:
    """The run ``wide/current`` of ``size`` task instances, written directly."""
    from airdask.scheduler.runs import create_run

    config = load_config(_env(home, url))
    store = Store.from_config(config)
    init_db(store, default_pool_slots=4096)
    dag = make_dag(size)
    now = utcnow()
    states: list[str | None] = [s for s, n in MIX.items() for _ in range(n)]
    with store.session() as session:
        run = create_run(session, dag, run_id="current")
        run.state, run.start_date = "running", now
        rows = []
        for i, task in enumerate(dag.tasks):
            state = states[i - 1] if 0 < i <= len(states) else "success"
            state = None if task.task_id == "end" else state
            started = state in ("success", "failed", "running")
            rows.append(
                {
                    "dag_id": "wide",
                    "task_id": task.task_id,
                    "run_id": "current",
                    "map_index": -1,
                    "try_number": int(started or state == "queued"),
                    "state": state,
                    "start_date": now if started else None,
                    "end_date": now if state in ("success", "failed") else None,
                    "duration": 0.01 if state in ("success", "failed") else None,
                    "hostname": "bench" if started else None,
                    "reason": "exit code 1: something went wrong" if state == "failed" else None,
                    "queued_dttm": now if state in ("queued", "running") else None,
                }
            )
        for i in range(0, len(rows), 10_000):
            session.execute(insert(TaskInstance), rows[i : i + 10_000])
        analyze_after_insert(session, "task_instance", len(rows))  # as start_run does
    return store


def _cpu(children: bool) -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(repeat: int, what: str, fn: Callable[[], Any], *, children: bool = False) -> None:
    """Median and best wall time of ``fn``, and the median CPU time it took (of this process,
    or of the subprocesses it ran): the load of a shared machine changes that least."""
    times, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), _cpu(children)
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(_cpu(children) - c0)
    print(
        f"  {what}: median {statistics.median(times) * 1000:.0f} ms, best "
        f"{min(times) * 1000:.0f} ms (median CPU {statistics.median(cpu) * 1000:.0f} ms)"
    )


def views(store: Store, home: Path, url: str | None, repeat: int) -> None:
    from airdask.cli.ti_report import run_report
    from airdask.dashboard.summary import build_summary
    from airdask.scheduler.single_run import _counts

    env = _env(home, url)
    cmd = [sys.executable, "-m", "airdask.cli", "tasks", "states", "wide", "current"]

    def cli() -> None:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or "total" not in proc.stdout:
            sys.exit(f"tasks states failed:\n{proc.stdout}\n{proc.stderr}")

    def report() -> None:
        console = Console(file=io.StringIO(), width=120)
        with store.session() as session:
            for shown in run_report(session, "wide", "current", title="wide / current"):
                console.print(shown)

    def summary() -> None:
        with store.session() as session:
            build_summary(session)

    def progress() -> None:
        _counts(cast(Any, SimpleNamespace(store=store)), "wide", "current")  # reads job.store

    timed(repeat, "tasks states (CLI, a subprocess)", cli, children=True)
    timed(repeat, "tasks states (run_report + printing)", report)
    timed(repeat, "dashboard data (build_summary)", summary)
    timed(repeat, "airdask run progress (counts by state)", progress)


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def scheduler_memory(home: str, url: str | None, size: int) -> None:
    """(In a subprocess.) Read the run and pass until nothing is left to queue."""
    sys.path.insert(0, str(Path(__file__).parent))
    from dag_run import InstantExecutor

    from airdask.scheduler.loop import SchedulerJob

    config = load_config(_env(Path(home), url))
    store = Store.from_config(config)
    dag = make_dag(size)
    executor = InstantExecutor(config=config)
    job = SchedulerJob(store=store, executor=executor, config=config, dags={"wide": dag})
    gc.collect()
    before = _rss("VmRSS")
    t0 = time.perf_counter()
    job.start()
    most, passes = 0, 0
    while True:
        result = job.run_once()
        passes += 1
        most = max(most, sum(isinstance(o, TaskInstance) for o in gc.get_objects()))
        if not result.busy:
            break
    elapsed = time.perf_counter() - t0
    job.stop()
    peak = _rss("VmHWM")
    print(
        f"  scheduler: {passes} passes in {elapsed:.1f} s; peak RSS {peak / 2**20:.0f} MiB, "
        f"{(peak - before) / 2**20:.0f} MiB above its start; at most {most} TaskInstance "
        "objects held at the end of a pass"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--scheduler-memory", metavar="HOME", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scheduler_memory:
        scheduler_memory(args.scheduler_memory, args.url, args.size)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from dag_scale import drop_pg, pg_url

    name = f"airdask_large_{uuid.uuid4().hex[:8]}" if args.db == "postgres" else None
    url = pg_url(name) if name else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            t0 = time.perf_counter()
            store = build(home, url, args.size)
            print(
                f"{args.size:,} task instances in one run ({args.db}), written in "
                f"{time.perf_counter() - t0:.1f} s; "
                + ", ".join(f"{n} {s}" for s, n in MIX.items())
                + ", the rest success, end waiting:"
            )
            views(store, home, url, args.repeat)
            store.dispose()
            cmd = [sys.executable, __file__, "--scheduler-memory", tmp, "--size", str(args.size)]
            subprocess.run([*cmd, *(["--url", url] if url else [])], check=True)
    finally:
        if name:
            drop_pg(name)


if __name__ == "__main__":
    main()
