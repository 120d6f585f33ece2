"""Per-attempt cost of the runner's supervision, in-process, against a bare subprocess.run.

    python benchmarks/runner_overhead.py [--attempts 300] [--profile]

Prints milliseconds per attempt for ``subprocess.run(["true"])``, ``runner.run_task`` of the
same argv (process group, reaper registration, log file, tail read), of the argv with its
log returned from memory (how it runs on Dask: output through a pipe) and of a no-op
PythonCommand; ``--profile`` adds the top of a cProfile of the argv attempts.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import subprocess
import tempfile
import time
from collections.abc import Callable

from airdask import PythonCommand, runner
from airdask.commands import Command, build_spec
from airdask.runner import TaskSpec
from airdask.state import TaskInstanceKey


def specs(command: Command, n: int, root: str | None) -> list[TaskSpec]:
    return [
        build_spec(TaskInstanceKey("bench", "t", f"r{i}"), command, log_root=root, return_log=True)
        for i in range(n)
    ]


def per_call_ms(calls: list[Callable[[], object]]) -> float:
    start = time.perf_counter()
    for call in calls:
        call()
    return (time.perf_counter() - start) / len(calls) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=300)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="airdask-bench-")
    n = args.attempts
    runner.run_task(specs(["true"], 1, root)[0])  # start the reaper outside the timing
    bare = per_call_ms([lambda: subprocess.run(["true"], check=False)] * n)
    argv = per_call_ms([lambda s=s: runner.run_task(s) for s in specs(["true"], n, root)])
    piped = per_call_ms([lambda s=s: runner.run_task(s) for s in specs(["true"], n, None)])
    noop = per_call_ms(
        [lambda s=s: runner.run_task(s) for s in specs(PythonCommand(len, "x"), n, root)]
    )
    print(f"bare subprocess.run(['true']) {bare:6.2f} ms per attempt")
    print(f"runner, argv ['true']         {argv:6.2f} ms per attempt ({argv / bare:.2f}x)")
    print(f"  the same, log in memory     {piped:6.2f} ms per attempt ({piped / bare:.2f}x)")
    print(f"runner, no-op PythonCommand   {noop:6.3f} ms per attempt")
    if args.profile:
        profile = cProfile.Profile()
        batch = specs(["true"], n, root)
        profile.enable()
        for spec in batch:
            runner.run_task(spec)
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(8)


if __name__ == "__main__":
    main()
