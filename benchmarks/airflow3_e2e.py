"""Airflow 3.3 end to end: the same 50-task DAG through LocalExecutor and through airdask.

``start >> 48 echo >> end`` (tests/airflow_dags/e2e_50.py, the DAG of the LocalExecutor
anchor), triggered through the REST API and timed from the trigger to the run's final state,
on one deployment (PostgreSQL, api-server, dag-processor; tests/airflow_stack.py). Between
rounds only the scheduler is restarted, alternately with

* ``LocalExecutor`` (parallelism 4: four worker processes forked from the scheduler), and
* ``airdask.airflow.DaskExecutor`` (parallelism 4: a Dask cluster of 2 workers x 2 threads,
  with their fork servers; their database URL points at a closed port),

so both see the same machine in the same minutes. Prints every round, the medians and the
ratio LocalExecutor / airdask (target: >= 1.0, airdask at least as fast).

Usage::

    python benchmarks/airflow3_e2e.py [--rounds 3] [--no-forkserver]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from airflow_stack import AirflowStack, WorkerSpec
from airflow_venv import ensure_venv

LOCAL = "LocalExecutor"
DASK = "airdask.airflow.DaskExecutor"


def scheduler_up(stack: AirflowStack, since: float) -> bool:
    rows = stack.query(
        "select count(*) from job where job_type = 'SchedulerJob' and state = 'running' "
        "and latest_heartbeat > to_timestamp(:t)",
        t=since,
    )
    return bool(rows[0][0])


def one_round(stack: AirflowStack, executor: str, number: int) -> float:
    stack.env["AIRFLOW__CORE__EXECUTOR"] = executor
    started = time.time()
    stack.start_scheduler()
    stack.wait(lambda: scheduler_up(stack, started), 180, "the scheduler", "scheduler")
    if executor == DASK:  # the fork servers import Airflow once, before the clock starts
        stack.wait(lambda: fork_servers(stack) >= 2, 120, "the fork servers", "scheduler")
    t0 = time.monotonic()
    run_id = stack.trigger("e2e_50", f"bench-{number}-{executor.rsplit('.', 1)[-1]}")
    state = stack.wait_for_run(run_id, timeout=900)
    wall = time.monotonic() - t0
    stack.stop("scheduler")
    if state != "success":
        raise SystemExit(f"round {number} ({executor}) ended {state}")
    return wall


def fork_servers(stack: AirflowStack) -> int:
    """Fork servers that finished importing (their listening socket answers)."""
    import socket

    ready = 0
    for path in Path(tempfile.gettempdir()).glob("dask-scratch-space/*/airdask-airflow/*.sock"):
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(str(path))
            except OSError:
                continue
        ready += 1
    return ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per executor")
    parser.add_argument("--no-forkserver", action="store_true", help="fresh interpreters")
    args = parser.parse_args()
    bin_dir = ensure_venv()
    home = Path(tempfile.mkdtemp(prefix="airdask-bench-af3-"))
    extra = {"AIRFLOW__DASK__FORKSERVER": "False"} if args.no_forkserver else {}
    stack = AirflowStack(
        bin_dir, home, executor=LOCAL, parallelism=4,
        workers=(WorkerSpec("w1"), WorkerSpec("w2")), extra_env=extra,
    )  # fmt: skip
    times: dict[str, list[float]] = {LOCAL: [], DASK: []}
    try:
        stack.start_dask()
        stack.airflow("db", "migrate", timeout=300)
        stack.spawn("api-server", [str(bin_dir / "airflow"), "api-server", "--host",
                                   "127.0.0.1", "--port", str(stack.api_port)])  # fmt: skip
        stack.spawn("dag-processor", [str(bin_dir / "airflow"), "dag-processor"])
        stack.wait(stack.api_ready, 180, "the API server", "api-server")
        stack.wait_for_dags("e2e_50")
        number = 0
        for _ in range(args.rounds):
            for executor in (LOCAL, DASK):
                number += 1
                wall = one_round(stack, executor, number)
                times[executor].append(wall)
                print(f"round {number}: {executor:30s} {wall:6.1f} s", flush=True)
    finally:
        stack.close()
    local, dask = statistics.median(times[LOCAL]), statistics.median(times[DASK])
    print(f"median LocalExecutor (parallelism 4): {local:.1f} s")
    print(f"median airdask DaskExecutor (2 workers x 2 threads): {dask:.1f} s")
    print(f"ratio LocalExecutor / airdask: {local / dask:.2f} (target >= 1.0)")


if __name__ == "__main__":
    main()
