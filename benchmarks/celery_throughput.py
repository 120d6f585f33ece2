"""CeleryExecutor throughput against raw Celery on the same workers, and the cost of sync().

Throughput: N trivial commands (argv ``true``) through CeleryExecutor (queue_command, then
heartbeat until every terminal event is in; parallelism unlimited) and, on the very same
worker processes, raw Celery: ``apply_async`` of a task that runs ``subprocess.run(["true"])``
N times, then ``ResultSet.get()``. One run each, in the same process, against the same
Redis; the ratio (executor rate / raw rate) is printed, target >= 0.8.

sync(): the cost of one ``sync()`` with K attempts in flight (sent to a queue no worker
consumes, so none finishes): one Redis MGET per sync, whatever K.

The workers are ``airdask celery worker``'s own (:func:`airdask.executors.celery.worker.
run_worker`), started by this script with the raw task registered beside airdask's.

Run: ``python benchmarks/celery_throughput.py [--tasks N] [--concurrency C] [--redis-db D]``
(Redis at 127.0.0.1:6379).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from airdask.config import load_config
from airdask.executors.celery.app import make_app
from airdask.executors.celery.executor import CeleryExecutor
from airdask.executors.celery.settings import celery_settings
from airdask.state import TaskInstanceState
from airdask.store import TaskInstance

TERMINAL = (TaskInstanceState.SUCCESS, TaskInstanceState.FAILED)
RAW_TASK = "bench.raw_true"


def raw_true() -> int:
    return subprocess.run(["true"], check=False).returncode


def settings_env(db: int, queue: str) -> dict[str, str]:
    return {
        "AIRDASK__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{db}",
        "AIRDASK__CELERY__DEFAULT_QUEUE": queue,
    }


def app_for(env: dict[str, str]) -> Any:
    app = make_app(celery_settings(load_config({**os.environ, **env})))
    app.task(name=RAW_TASK)(raw_true)
    return app


def worker_main(db: int, queue: str, concurrency: int) -> None:
    """The worker side (``--worker``): airdask's worker with the raw task registered too."""
    from airdask.executors.celery.worker import run_worker

    app = app_for(settings_env(db, queue))
    sys.exit(run_worker(app, queues=[queue], concurrency=concurrency,
                        hostname=f"bench-{uuid.uuid4().hex[:6]}@localhost",
                        loglevel="WARNING", without_mingle=True))  # fmt: skip


def tis(prefix: str, n: int) -> list[TaskInstance]:
    return [TaskInstance(dag_id="bench", task_id=prefix, run_id="r", try_number=1,
                         map_index=i) for i in range(n)]  # fmt: skip


def run_executor(env: dict[str, str], n: int) -> tuple[float, CeleryExecutor]:
    config = load_config({**os.environ, **env})
    executor = CeleryExecutor(0, config=config)
    executor.start()
    started = time.perf_counter()
    for ti in tis(f"ex{uuid.uuid4().hex[:6]}", n):
        executor.queue_command(ti, ["true"])
    done = 0
    while done < n:
        executor.heartbeat()
        done += sum(1 for s, _ in executor.get_event_buffer().values() if s in TERMINAL)
        if done < n:
            time.sleep(0.02)  # the scheduler's loop_interval-like pause
    elapsed = time.perf_counter() - started
    executor.end()
    return elapsed, executor


def run_raw(env: dict[str, str], n: int) -> float:
    from celery.result import ResultSet

    app = app_for(env)
    started = time.perf_counter()
    results = ResultSet([app.send_task(RAW_TASK) for _ in range(n)])
    results.get(timeout=600)
    elapsed = time.perf_counter() - started
    app.close()
    return elapsed


def sync_cost(env: dict[str, str], in_flight: int) -> float:
    """Median seconds of one sync() with ``in_flight`` attempts that cannot finish."""
    nobody = {"AIRDASK__CELERY__DEFAULT_QUEUE": f"nobody-{uuid.uuid4().hex}"}
    config = load_config({**os.environ, **env, **nobody})
    executor = CeleryExecutor(0, config=config)
    executor.start()
    for ti in tis(f"sync{uuid.uuid4().hex[:6]}", in_flight):
        executor.queue_command(ti, ["true"])
    executor.trigger_tasks(in_flight)
    samples = []
    for _ in range(20):
        started = time.perf_counter()
        executor.sync()
        samples.append(time.perf_counter() - started)
    executor.terminate()
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--redis-db", type=int, default=14)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--queue", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.redis_db, args.queue, args.concurrency)
        return
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    env = settings_env(args.redis_db, queue)
    home = tempfile.mkdtemp(prefix="airdask-bench-")
    env["AIRDASK_HOME"] = home
    worker = subprocess.Popen(
        [sys.executable, __file__, "--worker", "--queue", queue, "--redis-db",
         str(args.redis_db), "--concurrency", str(args.concurrency)],
        env={**os.environ, **env}, start_new_session=True,
    )  # fmt: skip
    try:
        run_raw(env, 20)  # warm-up: the worker answers, its pool processes are forked
        raw = run_raw(env, args.tasks)
        ex_elapsed, executor = run_executor(env, args.tasks)
        raw_rate, ex_rate = args.tasks / raw, args.tasks / ex_elapsed
        print(f"{args.tasks} trivial commands, {args.concurrency} worker processes, Redis")
        print(f"  raw Celery apply_async:  {raw:6.2f} s  {raw_rate:7.1f}/s")
        print(f"  CeleryExecutor:          {ex_elapsed:6.2f} s  {ex_rate:7.1f}/s")
        print(f"  ratio executor/raw:      {ex_rate / raw_rate:.2f}x (target >= 0.8)")
        assert executor._fetcher is None  # ended
        print(f"  syncs: {executor.sync_count}, {executor.sync_seconds * 1000:.1f} ms in all, "
              f"{executor.sync_seconds / max(executor.sync_count, 1) * 1000:.2f} ms each "
              "(one round trip each)")  # fmt: skip
        for k in (1000, 10000):
            print(f"  one sync() with {k:>5} in flight: {sync_cost(env, k) * 1000:7.2f} ms")
    finally:
        os.killpg(worker.pid, signal.SIGQUIT)
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
