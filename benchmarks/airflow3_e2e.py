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
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
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


def one_round(stack: AirflowStack, executor: str, number: int, *, profile: bool) -> float:
    stack.env["AIRFLOW__CORE__EXECUTOR"] = executor
    started = time.time()
    stack.start_scheduler()
    stack.wait(lambda: scheduler_up(stack, started), 180, "the scheduler", "scheduler")
    if executor == DASK:  # the fork servers import Airflow once, before the clock starts
        stack.wait(lambda: fork_servers(stack) >= 2, 120, "the fork servers", "scheduler")
    log_start = stack.procs["scheduler"].log.stat().st_size
    cpu0 = stack_cpu(stack)
    t0 = time.monotonic()
    run_id = stack.trigger("e2e_50", f"bench-{number}-{executor.rsplit('.', 1)[-1]}")
    state = stack.wait_for_run(run_id, timeout=900)
    wall = time.monotonic() - t0
    cpu = cpu_delta(cpu0, stack_cpu(stack))
    log_text = stack.procs["scheduler"].log.read_bytes()[log_start:].decode(errors="replace")
    stack.stop("scheduler")
    if state != "success":
        raise SystemExit(f"round {number} ({executor}) ended {state}")
    if profile:
        print(f"  {phases(stack, run_id, log_text)}\n  {cpu}", flush=True)
    return wall


def stack_cpu(stack: AirflowStack) -> dict[str, float]:
    """CPU seconds used so far by each component of the deployment: its process, the live
    processes below it and the children they reaped. (By process tree: Airflow retitles
    its processes, which overwrites what /proc shows of their environment.)"""
    names = {proc.popen.pid: name for name, proc in stack.procs.items()}
    parents: dict[int, int] = {}
    ticks: dict[int, tuple[int, int]] = {}  # (utime + stime, cutime + cstime)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        ticks[pid] = (int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]))
    found: dict[str, float] = {}
    hz = os.sysconf("SC_CLK_TCK")
    for pid, (own, reaped) in ticks.items():
        owner = pid
        while owner not in names and owner in parents and owner > 1:
            owner = parents[owner]
        if owner not in names:
            continue
        parts = {names[owner]: own, f"{names[owner]}'s children": reaped}
        if owner != pid:  # a live descendant (a fork server, LocalExecutor's workers)
            parts = {f"{names[owner]}'s descendants": own + reaped}
        for name, used in parts.items():
            found[name] = found.get(name, 0.0) + used / hz
    return found


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> str:
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    parts = ", ".join(f"{name} {value:.1f}" for name, value in sorted(used.items()) if value >= 0.1)
    return f"CPU {sum(used.values()):.1f}s ({parts})"


def phases(stack: AirflowStack, run_id: str, scheduler_log: str) -> str:
    """Medians per task of where the time goes: queued (in the database) to the task's start
    (its runner called the API), the task's run, its end to the executor's event reaching
    the scheduler (which frees the slot)."""
    rows = stack.query(
        "select task_id, extract(epoch from queued_dttm), extract(epoch from start_date), "
        "extract(epoch from end_date) from task_instance where run_id = :r",
        r=run_id,
    )
    events = {}
    pattern = re.compile(
        r"(\d{4}-\d\d-\d\dT[\d:.]+)Z?.*Received executor event with state success for "
        r"task instance TaskInstanceKey\(dag_id='e2e_50', task_id='([^']+)', run_id='"
        + re.escape(run_id)
    )
    for match in pattern.finditer(scheduler_log):
        stamp = datetime.fromisoformat(match.group(1)).replace(tzinfo=timezone.utc)
        events[match.group(2)] = stamp.timestamp()
    waits = [float(s) - float(q) for _, q, s, _ in rows if q and s]
    runs = [float(e) - float(s) for _, _, s, e in rows if s and e]
    reports = [events[t] - float(e) for t, _, _, e in rows if e and t in events]

    def median(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}s" if values else "n/a"

    return (
        f"per task (median): queued->start {median(waits)}, run {median(runs)}, "
        f"end->executor event {median(reports)} ({len(reports)} events)"
    )


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
    parser.add_argument("--profile", action="store_true", help="print where each round's time goes")
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
                wall = one_round(stack, executor, number, profile=args.profile)
                times[executor].append(wall)
                print(f"round {number}: {executor:30s} {wall:6.1f} s", flush=True)
    finally:
        stack.close()
    local, dask = statistics.median(times[LOCAL]), statistics.median(times[DASK])
    print(f"median LocalExecutor (parallelism 4): {local:.1f} s")
    print(f"median airdask DaskExecutor (2 workers x 2 threads): {dask:.1f} s")
    print(f"ratio LocalExecutor / airdask: {local / dask:.2f} (target >= 1.0)")
    # Each round beside the one before it: less swayed by a noisy minute than the medians.
    pairs = [a / b for a, b in zip(times[LOCAL], times[DASK], strict=True)]
    listed = ", ".join(f"{ratio:.2f}" for ratio in pairs)
    print(f"ratio per round pair: {listed}; median {statistics.median(pairs):.2f}")


if __name__ == "__main__":
    main()
