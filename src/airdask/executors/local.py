"""LocalExecutor: attempts run in worker processes on the scheduler's machine.

``parallelism=0`` starts a process per attempt; ``parallelism=N`` keeps a pool of N worker
processes. Each worker has its own pipe, so the executor always knows which attempt a
worker holds: a worker that dies fails exactly that attempt, with the exit status as reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from airdask.executors.base import BaseExecutor
from airdask.executors.common import (
    cleanup_by_revoking,
    local_spec,
    log_from_folder,
    report_outcome,
    report_started,
)
from airdask.executors.events import EventInfo
from airdask.runner import TaskSpec
from airdask.state import TaskInstanceKey

if TYPE_CHECKING:
    from airdask.commands import Command
    from airdask.config import Config
    from airdask.store.models import TaskInstance

log = logging.getLogger(__name__)


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    conn: Connection
    key: TaskInstanceKey | None = None


def _join(process: subprocess.Popen[bytes], timeout: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)


def _exit_description(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class LocalExecutor(BaseExecutor):
    """Runs attempts in local worker processes (a pool of ``parallelism``, or one each)."""

    is_local = True

    def __init__(self, parallelism: int | None = None, *, config: Config | None = None) -> None:
        super().__init__(parallelism, config=config)
        self._workers: list[_Worker] = []
        self._pending: deque[tuple[TaskInstanceKey, TaskSpec]] = deque()
        self._started = False

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True

    def _spawn(self, *, once: bool) -> _Worker:
        ours, theirs = socket.socketpair()
        with theirs:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "airdask.executors.local_worker",
                    str(theirs.fileno()),
                    "1" if once else "0",
                    str(os.getpid()),
                ],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        return _Worker(process, Connection(ours.detach()))

    # ---- the contract ------------------------------------------------------------------

    def execute_async(
        self,
        key: TaskInstanceKey,
        command: Command,
        queue: str | None = None,
        executor_config: Any | None = None,
    ) -> None:
        self._ensure_started()
        self._pending.append((key, local_spec(self, key, command, executor_config)))
        self._dispatch()

    def sync(self) -> None:
        self._collect(timeout=0)
        self._dispatch()

    def _dispatch(self) -> None:
        while self._pending:
            worker = self._idle_worker()
            if worker is None:
                return
            key, spec = self._pending.popleft()
            try:
                worker.conn.send(spec)
            except OSError as exc:  # died between checks; _collect reports it
                log.warning("local worker %s unusable: %s", worker.process.pid, exc)
                self._pending.appendleft((key, spec))
                self._collect(timeout=0)
                continue
            worker.key = key
            report_started(self, key)

    def _idle_worker(self) -> _Worker | None:
        """An idle pool worker, a new one while the pool is below ``parallelism``, or None."""
        if self.parallelism:
            idle = (w for w in self._workers if w.key is None and w.process.poll() is None)
            worker = next(idle, None)
            if worker is not None or len(self._workers) >= self.parallelism:
                return worker
        worker = self._spawn(once=self.parallelism == 0)
        self._workers.append(worker)
        return worker

    def _collect(self, timeout: float | None) -> None:
        busy = {w.conn: w for w in self._workers if w.key is not None}
        if not busy:
            return
        for conn in wait(list(busy), timeout=timeout):
            worker = busy[conn]  # type: ignore[index]
            try:
                outcome = worker.conn.recv()
            except (EOFError, OSError):
                self._worker_died(worker)
                continue
            key, worker.key = worker.key, None
            assert key is not None
            report_outcome(self, key, outcome)
            if self.parallelism == 0:
                self._retire(worker)
        # Idle workers that died are dropped; _idle_worker spawns replacements on demand.
        for worker in [w for w in self._workers if w.key is None and w.process.poll() is not None]:
            self._retire(worker)

    def _worker_died(self, worker: _Worker) -> None:
        _join(worker.process, 5)
        key = worker.key
        assert key is not None
        reason = (
            f"local worker process (pid {worker.process.pid}) died: "
            f"{_exit_description(worker.process.returncode)}"
        )
        log.error("%s while running %s", reason, key)
        self.fail(key, EventInfo(reason, kind="worker_died", hostname=os.uname().nodename))
        worker.key = None
        self._retire(worker)

    def _retire(self, worker: _Worker) -> None:
        with contextlib.suppress(ValueError):
            self._workers.remove(worker)
        worker.conn.close()
        _join(worker.process, 5)

    # ---- optional methods --------------------------------------------------------------

    def end(self) -> None:
        """Wait for every running attempt, report it, and stop the worker processes."""
        while self._pending or any(w.key is not None for w in self._workers):
            self._dispatch()
            self._collect(timeout=0.5)
        self._stop_workers()

    def terminate(self) -> None:
        """Kill running commands (their process groups) and the workers; report them."""
        for key, _ in self._pending:
            self.fail(key, EventInfo("terminated before it started", kind="killed"))
        self._pending.clear()
        for worker in self._workers:
            # A worker's SIGTERM handler kills its command's process group, then exits.
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        for worker in list(self._workers):
            _join(worker.process, 10)
            if worker.process.poll() is None:
                worker.process.kill()
                _join(worker.process, 5)
            if worker.key is not None:
                self.fail(worker.key, EventInfo("terminated", kind="killed"))
                worker.key = None
        self._stop_workers()

    def _stop_workers(self) -> None:
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.conn.send(None)
        for worker in list(self._workers):
            self._retire(worker)
            if worker.process.poll() is None:
                worker.process.kill()
                _join(worker.process, 5)
        self._workers.clear()
        self._started = False

    def revoke_task(self, *, ti: TaskInstance) -> None:
        key = ti.key
        self.queued_tasks.pop(key, None)
        pending = [item for item in self._pending if item[0] == key]
        for item in pending:
            self._pending.remove(item)
            self.running.discard(key)
        for worker in [w for w in self._workers if w.key == key]:
            # The worker process hosts the command: SIGTERM makes it kill the group.
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
            _join(worker.process, 10)
            worker.key = None
            self.running.discard(key)
            self._retire(worker)

    def cleanup_stuck_queued_tasks(self, tis: list[TaskInstance]) -> list[str]:
        return cleanup_by_revoking(self, tis)

    def get_task_log(self, ti: TaskInstance, try_number: int) -> tuple[list[str], list[str]]:
        return log_from_folder(self, ti, try_number)
