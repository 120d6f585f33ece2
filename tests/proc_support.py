"""Helpers to observe processes in tests without sleeping blindly."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # it died between open and read
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def pids_file_complete(path: Path, count: int) -> Callable[[], bool]:
    return lambda: len(read_pids(path)) >= count


def spawn_tree_script(pid_file: Path, seconds: int = 60) -> list[str]:
    """argv of a command that starts a background child and records both pids."""
    return [
        "bash",
        "-c",
        f"sleep {seconds} & echo $! >> {pid_file}; echo $$ >> {pid_file}; wait",
    ]
