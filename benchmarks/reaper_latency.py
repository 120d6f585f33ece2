"""How long a command outlives the SIGKILL of the process that ran it (the runner's host).

Each round starts a host process that starts its reaper (:mod:`airdask.supervision`) and
one registered ``sleep 60``, SIGKILLs the host, and times two intervals with pidfds: from the
kill to the host's exit (the kernel's teardown, which is also when Dask's scheduler sees the
worker's connection close), and from the host's exit to the command's death (the reaper's
share: what a rerun of the attempt elsewhere could overlap).

Usage::

    python benchmarks/reaper_latency.py [--rounds 40] [--src path/to/other/src]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

HOST = r"""
import subprocess, sys, threading, types
sys.path.insert(0, sys.argv[1])
from airdask import supervision
rt = types.SimpleNamespace(lock=threading.RLock(), reaper=None)
supervision.ensure_reaper(rt)
command = subprocess.Popen(["sleep", "60"], start_new_session=True)
supervision.reaper_send(rt, "+%d" % command.pid)
print(command.pid, rt.reaper.pid, flush=True)
threading.Event().wait()
"""


def _exit_waiter(pid: int) -> tuple[int, select.poll]:
    fd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return fd, poller


def _wait_for_pidfd(pid: int, timeout: float = 1.0) -> bool:
    """Whether process ``pid`` (the reaper) came to hold a pidfd, i.e. watches its host,
    within ``timeout``. A reaper that polls instead (``--src`` of an older airdask) holds
    none: after ``timeout`` it has long started, and the round goes on."""
    deadline = time.monotonic() + timeout
    folder = Path(f"/proc/{pid}/fd")
    while time.monotonic() < deadline:
        for fd in folder.iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == "anon_inode:[pidfd]":
                    return True
        time.sleep(0.005)  # polling /proc: no event tells another process's descriptors
    return False


def one_round(src: str) -> tuple[float, float]:
    host = subprocess.Popen([sys.executable, "-c", HOST, src], stdout=subprocess.PIPE, text=True)
    assert host.stdout is not None
    command_pid, reaper_pid = map(int, host.stdout.readline().split())
    _wait_for_pidfd(reaper_pid)  # measured from here: the reaper watches its host
    command_fd, command_exit = _exit_waiter(command_pid)
    host_fd, host_exit = _exit_waiter(host.pid)
    t0 = time.perf_counter()
    host.kill()
    host_exit.poll(5000)
    t1 = time.perf_counter()
    if not command_exit.poll(5000):
        raise SystemExit(f"the command {command_pid} outlived its host by 5 s")
    t2 = time.perf_counter()
    host.wait()
    os.close(command_fd)
    os.close(host_fd)
    return (t1 - t0) * 1000, (t2 - t1) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument(
        "--src", default=str(Path(__file__).resolve().parent.parent / "src"), help="airdask's src"
    )
    args = parser.parse_args()
    teardown, reaper = zip(*(one_round(args.src) for _ in range(args.rounds)), strict=True)
    for name, values in (("kill to host exit", teardown), ("host exit to command death", reaper)):
        ordered = sorted(values)
        print(
            f"{name:28} median {statistics.median(ordered):6.2f} ms"
            f"  p90 {ordered[int(len(ordered) * 0.9)]:6.2f} ms  max {ordered[-1]:6.2f} ms"
        )


if __name__ == "__main__":
    main()
