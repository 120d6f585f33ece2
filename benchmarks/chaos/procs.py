"""Processes the suite starts, and the ledger commands it watches.

Every process the harness starts goes through :class:`Processes`: each in its own session
(so one ``killpg`` takes a ``dask worker`` with its nanny), each remembered, and all of them
SIGKILLed by :meth:`Processes.kill_all` on every way out of a scenario (the pytest fixture's
finalizer and the command line's ``finally`` both call it).

Ledger commands are found in ``/proc``: a command's leader is the ``bash`` whose argv holds the
scenario's ledger path, and every process of a command (the leader and its ``sleep``) carries
``AIRDASK_CTX_RUN_ID=<the scenario's run id>`` in its environment, a value no other process
on the machine has.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class Processes:
    """The processes of one scenario, each the leader of its own process group."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str], log: Path
    ) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes], *, timeout: float = 30) -> None:
        """SIGKILL ``proc``'s whole process group and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)

    @staticmethod
    def stop_all(procs: Sequence[subprocess.Popen[bytes]], *, timeout: float) -> bool:
        """SIGTERM each of ``procs``, then wait for them; SIGKILL the group of any still
        there ``timeout`` seconds later. True if all exited on their own."""
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        clean = True
        for proc in procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                Processes.kill(proc)
                clean = False
        return clean

    def kill_all(self) -> None:
        # A group outlives its leader (a worker's nanny dies, its worker stays), so every
        # group is killed, even of leaders already reaped.
        for proc in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)


def free_port() -> int:
    """A free loopback port below the ephemeral range: a scheduler restarted on it cannot
    find it taken by an outgoing connection of the clients trying to reconnect."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, max(low, 20001))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:  # gone, or not ours to read
        return b""


def _environ(pid: int) -> dict[str, str]:
    raw = _read(f"/proc/{pid}/environ")
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def live_attempts(ledger: Path) -> dict[int, tuple[str, int]]:
    """The leaders of live ledger commands: pid -> (task id, try number)."""
    needle = b"\0" + str(ledger).encode() + b"\0"
    parents: dict[int, int] = {}
    for pid in _pids():
        if needle in _read(f"/proc/{pid}/cmdline"):  # a zombie's cmdline is empty
            stat = _read(f"/proc/{pid}/stat")
            with contextlib.suppress(IndexError, ValueError):
                parents[pid] = int(stat.rsplit(b")", 1)[1].split()[1])
    found: dict[int, tuple[str, int]] = {}
    for pid, ppid in parents.items():
        if ppid in parents:  # a leader's child between fork and exec (it has the same argv)
            continue
        env = _environ(pid)
        with contextlib.suppress(KeyError, ValueError):
            found[pid] = (env["AIRDASK_CTX_TASK_ID"], int(env["AIRDASK_CTX_TRY_NUMBER"]))
    return found


def live_commands(run_id: str) -> list[int]:
    """Every live process of the run's commands (leaders and their children)."""
    return [pid for pid in _pids() if _environ(pid).get("AIRDASK_CTX_RUN_ID") == run_id]


def kill_pids(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def settle(pids_of: Callable[[], list[int]], *, timeout: float) -> list[int]:
    """Poll ``pids_of()`` until it is empty or ``timeout`` passed; what is left."""
    deadline = time.monotonic() + timeout
    left: list[int] = pids_of()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = pids_of()
    return left
