"""DaskExecutor throughput against raw Dask on the same cluster, and the cost of sync().

Throughput: N trivial attempts (argv ``true``, and a no-op PythonCommand) through
DaskExecutor (queue_command, then heartbeat until every terminal event is in) and through
raw ``client.map`` + ``gather`` on the same LocalCluster, in one run, interleaved over
several rounds (medians are printed; the ratio is the median of the per-round ratios):

* "raw Dask, bare work" maps ``subprocess.run(["true"])`` / a no-op function: the target
  (executor >= 1.0x of it, issue 12) is measured against this;
* "raw Dask mapping the runner" maps airdask's runner over the very specs the executor
  builds (same supervision and log capture), so that ratio is the executor's own overhead;
* CPU per attempt: the CPU time of the client, the Dask scheduler (in this process on a
  LocalCluster, in its own on the embedded cluster: ``--cluster embedded``), the workers
  and their commands, per attempt; steadier than rates on a shared machine, and on
  a saturated one its ratio predicts the throughput ratio. For the executor it counts from
  its first queue_command to the end of ``end()`` (which writes the last logs): building
  the task instances and starting the executor happen once in a scheduler's life.

sync(): the cost of one ``sync()`` with 10k, 50k and 100k attempts really submitted to a
Dask scheduler that has no worker (so none can finish), measured as the median of many calls.

Run: ``python benchmarks/executor_throughput.py [--tasks N] [--rounds R] [--skip-sync]
[--cluster local|embedded]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from airdask import PythonCommand, runner
from airdask.commands import build_spec
from airdask.config import load_config
from airdask.executors.dask import DaskExecutor
from airdask.executors.dask.shipping import install, reference, register_runner, shipped
from airdask.scheduler.pacing import IN_FLIGHT_SHARE, PASS_BATCH
from airdask.state import TaskInstanceState
from airdask.store import TaskInstance

TERMINAL = (TaskInstanceState.SUCCESS, TaskInstanceState.FAILED)
#: ``[scheduler] batch_wait``'s default: the longest the harness waits for a batch.
BATCH_WAIT = 0.05


def noop() -> None:
    return None


def own_pid() -> int:
    return os.getpid()


def bare_true(_: int) -> int:
    return subprocess.run(["true"], check=False).returncode


def bare_noop(_: int) -> None:
    return None


def tis(prefix: str, n: int) -> list[TaskInstance]:
    """One task mapped ``n`` times: its attempts share the Dask key prefix ``bench.<prefix>``,
    as the bare work's keys share theirs. (Dask's occupancy estimate walks every key prefix
    in flight on each transition, so n distinct task ids would slow Dask itself down,
    raw or not.)"""
    return [
        TaskInstance(dag_id="bench", task_id=prefix, run_id="r", map_index=i, try_number=1)
        for i in range(n)
    ]


def through_executor(
    client: Any, config: Any, label: str, n: int, command: Any, pids: list[int]
) -> tuple[float, float]:
    """``(attempts/s, CPU ms per attempt)``. The CPU window opens once the executor has
    started and the task instances exist (a scheduler has both already) and closes after
    ``end()``, which writes the last logs."""
    ex = DaskExecutor(client=client, config=config, parallelism=0)
    ex.start()
    todo = tis(f"{label}-ex", n)
    cpu_before = cpu_seconds(pids)
    start = time.perf_counter()
    for ti in todo:
        ex.queue_command(ti, command)
    done = 0
    failed = 0
    while done < n:
        ex.arrivals.take()  # as ExecutorSet.heartbeat does
        ex.heartbeat()
        for _, (state, _) in ex.get_event_buffer().items():
            if state in TERMINAL:
                done += 1
                failed += state is TaskInstanceState.FAILED
        # Paced as the scheduler's loop paces its passes (ADR 0014): wake for a batch of
        # outcomes, not after a fixed sleep that pays a heartbeat per outcome or two.
        ex.arrivals.wait(max(1, min(PASS_BATCH, (n - done) // IN_FLIGHT_SHARE)), BATCH_WAIT)
    elapsed = time.perf_counter() - start
    ex.end()
    cpu = (cpu_seconds(pids) - cpu_before) / n * 1e3
    if failed:
        raise SystemExit(f"{failed} of {n} {label} attempts failed")
    return n / elapsed, cpu


def raw_same_work(client: Any, label: str, n: int, command: Any) -> float:
    specs = [
        build_spec(ti.key, command, log_root=None, return_log=True) for ti in tis(f"{label}-raw", n)
    ]
    heavy = shipped(runner.run_task)
    install(client, [heavy])  # as the executor does
    run = reference(heavy)
    start = time.perf_counter()
    futures = client.map(run, specs, key=[s["key"] for s in specs], pure=False)
    results = client.gather(futures)
    elapsed = time.perf_counter() - start
    del futures
    assert all(r["state"] == "success" for r in results)
    return n / elapsed


def raw_bare(client: Any, n: int, func: Any) -> float:
    start = time.perf_counter()
    futures = client.map(func, range(n), pure=False)
    client.gather(futures)
    elapsed = time.perf_counter() - start
    del futures
    return n / elapsed


def cpu_seconds(pids: list[int]) -> float:
    """CPU time used so far by these processes and their reaped children (the commands)."""
    import psutil

    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system + t.children_user + t.children_system
    return total


def with_cpu(pids: list[int], n: int, run: Any, *args: Any) -> tuple[float, float]:
    """``(attempts/s, CPU ms per attempt)`` of ``run(*args)``, which returns attempts/s."""
    before = cpu_seconds(pids)
    rate = float(run(*args))
    return rate, (cpu_seconds(pids) - before) / n * 1e3


def sync_cost(config: Any, levels: list[int]) -> list[tuple[int, float, float, float]]:
    """Median and max µs of sync() with ``level`` attempts in flight, on a ``dask scheduler``
    subprocess that has no worker (so none can finish), and the submit time per attempt."""
    from distributed import Client

    folder = tempfile.mkdtemp(prefix="airdask-bench-sched-")
    sched_file = os.path.join(folder, "scheduler.json")
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--no-dashboard", "--scheduler-file", sched_file],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    rows = []
    try:
        deadline = time.monotonic() + 60
        while not (os.path.exists(sched_file) and os.path.getsize(sched_file)):
            if time.monotonic() > deadline:
                raise SystemExit("dask scheduler did not start")
            time.sleep(0.05)
        with Client(scheduler_file=sched_file, set_as_default=False) as client:
            ex = DaskExecutor(client=client, config=config, parallelism=0)
            ex.start()
            submitted = 0
            for level in levels:
                batch = tis(f"sync{level}-", level - submitted)
                t0 = time.perf_counter()
                for ti in batch:
                    ex.queue_command(ti, ["true"])
                ex.trigger_tasks(len(batch))
                per_task_us = (time.perf_counter() - t0) / len(batch) * 1e6
                submitted = level
                assert len(ex.running) == level
                assert not any(s in TERMINAL for s, _ in ex.get_event_buffer().values())
                samples = []
                for _ in range(500):
                    t1 = time.perf_counter()
                    ex.sync()
                    samples.append((time.perf_counter() - t1) * 1e6)
                assert not ex.event_buffer  # nothing finished
                rows.append((level, statistics.median(samples), max(samples), per_task_us))
    finally:
        scheduler.kill()
        scheduler.wait(10)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000, help="attempts per measurement")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="medians over this many rounds")
    parser.add_argument("--skip-sync", action="store_true")
    parser.add_argument(
        "--cluster", choices=("local", "embedded"), default="local",
        help="a LocalCluster (its Dask scheduler in this process), or airdask's embedded "
        "cluster (its Dask scheduler in a process of its own, ADR 0013); both sides share it",
    )  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("AIRDASK_HOME", tempfile.mkdtemp(prefix="airdask-bench-"))
    config = load_config()
    register_runner()

    from distributed import Client, LocalCluster

    from airdask.executors.dask.embedded import embedded_cluster

    n = args.tasks
    print(
        f"{args.cluster} cluster: {args.workers} process workers x {args.threads} threads, "
        f"{n} tasks, medians of {args.rounds} rounds"
    )
    if args.cluster == "embedded":
        shape = {("dask", "n_workers"): args.workers, ("dask", "threads_per_worker"): args.threads}
        cluster = embedded_cluster(
            config.with_overrides({**shape, ("dask", "dashboard_address"): ""})
        )
    else:
        cluster = LocalCluster(
            n_workers=args.workers,
            threads_per_worker=args.threads,
            processes=True,
            dashboard_address=None,
        )
    with cluster, Client(cluster, set_as_default=False) as client:
        # the client (and a LocalCluster's Dask scheduler), the Dask scheduler, the workers
        pids = list({os.getpid(), client.run_on_scheduler(own_pid)})
        pids += client.run(os.getpid).values()
        # warm up imports and the by-value runner on every worker
        raw_same_work(client, "warm", 50, ["true"])
        for label, command, bare in (
            ("argv true", ["true"], bare_true),
            ("no-op PythonCommand", PythonCommand(noop), bare_noop),
        ):
            tag = label.split()[0].replace("-", "")
            rates: list[tuple[float, float, float]] = []
            cpus: list[tuple[float, float]] = []
            for round_ in range(args.rounds):  # interleaved, so drift hits all three alike
                ex_rate, ex_cpu = through_executor(
                    client, config, f"{tag}{round_}", n, command, pids
                )
                raw_rate = raw_same_work(client, f"{tag}{round_}", n, command)
                bare_rate, bare_cpu = with_cpu(pids, n, raw_bare, client, n, bare)
                rates.append((ex_rate, raw_rate, bare_rate))
                cpus.append((ex_cpu, bare_cpu))
            ex_rate, raw_rate, bare_rate = (statistics.median(r) for r in zip(*rates, strict=True))
            vs_same = statistics.median(e / r for e, r, _ in rates)
            vs_bare = statistics.median(e / b for e, _, b in rates)
            ex_cpu, bare_cpu = (statistics.median(c) for c in zip(*cpus, strict=True))
            print(
                f"{label:20s} executor {ex_rate:5.0f}/s | raw Dask, bare work {bare_rate:5.0f}/s"
                f" | ratio {vs_bare:4.2f} | raw Dask mapping the runner {raw_rate:5.0f}/s"
                f" (ratio {vs_same:4.2f})\n{'':20s} CPU per attempt, all processes: executor "
                f"{ex_cpu:4.2f} ms | bare {bare_cpu:4.2f} ms | ratio {bare_cpu / ex_cpu:4.2f}"
            )
    if not args.skip_sync:
        print("sync() with attempts in flight and none finished (worker-less cluster):")
        for level, median, worst, submit in sync_cost(config, [10_000, 50_000, 100_000]):
            print(
                f"  {level:>7,d} in flight: median {median:7.1f} µs, max {worst:8.1f} µs "
                f"(queue_command + trigger_tasks: {submit:5.0f} µs per attempt)"
            )


if __name__ == "__main__":
    main()
