"""What several executors cost the scheduler: one pass with one executor vs two.

The pass of ``dag_run.py`` (SQLite, 9,500 finished task instances, 500 ready: all queued,
executed by an executor that reports success at once, outcomes persisted, the run
finished), run with every task on one executor, then with half of the tasks naming a
second executor (routing, per-executor slots, two heartbeats, two event buffers merged).
Both variants are measured in the same process, interleaved, and printed as a ratio.

Usage::

    python benchmarks/several_executors.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from dag_run import InstantExecutor, _pass_db

from airdask.executors.names import ExecutorName
from airdask.scheduler.executors import ExecutorSet
from airdask.scheduler.loop import SchedulerJob
from airdask.store import DagRun


class OtherInstantExecutor(InstantExecutor):
    """A second executor of the same kind (each class may be configured once)."""


def one_pass(*, split: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store, config, dag = _pass_db(tmp, scheduled=True)
        first = (ExecutorName("dag_run.InstantExecutor"), InstantExecutor(config=config))
        built = [first]
        if split:
            for task in dag.tasks[::2]:
                task.executor = "other"
            other = OtherInstantExecutor(config=config)
            built.append((ExecutorName(f"{__name__}.OtherInstantExecutor", "other"), other))
        executors = ExecutorSet(built, parallelism=1000)
        job = SchedulerJob(store=store, executor=executors, config=config, dags={"wide": dag})
        job.start()
        job.dirty.clear()  # as in a steady state: nothing to re-evaluate
        t0 = time.process_time()  # CPU time: the machine is shared, wall time is noise
        result = job.run_once()
        elapsed = time.process_time() - t0
        job.stop()
        with store.session() as session:
            run = session.get(DagRun, ("wide", "current"))
            assert run is not None and run.state == "success" and result.queued == 500
        store.dispose()
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    one: list[float] = []
    two: list[float] = []
    one_pass(split=False)  # warm-up: imports, the page cache
    for n in range(args.repeat):  # interleaved, in alternating order (ABBA), so that load
        order = (False, True) if n % 2 == 0 else (True, False)  # hits both alike
        for split in order:
            (two if split else one).append(one_pass(split=split))
    m1, m2 = statistics.median(one), statistics.median(two)
    print("scheduler pass, SQLite, 10,000 TIs (500 ready), instant executors, CPU time:")
    print(f"  one executor:  median {m1 * 1000:.1f} ms, best {min(one) * 1000:.1f} ms")
    print(f"  two executors: median {m2 * 1000:.1f} ms, best {min(two) * 1000:.1f} ms")
    print(f"  two / one: {m2 / m1:.2f}x (median), {min(two) / min(one):.2f}x (best)")
    print(f"  (the machine's noise: one executor's slowest / best = {max(one) / min(one):.2f}x)")


if __name__ == "__main__":
    main()
