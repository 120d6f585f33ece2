"""The external Dask cluster of one scenario: ``dask scheduler`` on a fixed loopback port
(so it can be SIGKILLed and restarted where the clients look for it) and ``dask worker``
subprocesses (with their nannies) that can be SIGKILLed and replaced."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from chaos.procs import Processes, free_port
from proc_support import wait_for

log = logging.getLogger("chaos")
BIN = Path(sys.executable).parent


class DaskCluster:
    """A scheduler and ``workers`` workers of ``nthreads`` threads, all subprocesses."""

    def __init__(
        self, folder: Path, procs: Processes, *, workers: int = 2, nthreads: int = 2
    ) -> None:
        self.folder = folder
        self.procs = procs
        self.size = workers
        self.nthreads = nthreads
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.worker_logs: dict[int, Path] = {}  # pid -> log
        self.registered: set[int] = set()  # pids whose log says they joined the scheduler
        self.starts = 0
        # A task survives one worker death, then fails with KilledWorker: retries belong
        # to airdask (DESIGN.md, decision 7), as for the test suite's external clusters.
        self.env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}

    def start(self, *, timeout: float) -> None:
        self.start_scheduler(timeout=timeout)
        for _ in range(self.size):
            self.start_worker()
        self.wait_for_workers(timeout=timeout)

    def start_scheduler(self, *, timeout: float) -> None:
        self.starts += 1
        sched_file = self.folder / f"dask-scheduler-{self.starts}.json"
        self.scheduler = self.procs.spawn(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
             "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file)],
            env=self.env, log=self.folder / "dask-scheduler.log",
        )  # fmt: skip

        def written() -> bool:
            if self.scheduler is not None and self.scheduler.poll() is not None:
                raise RuntimeError(f"dask scheduler exited; see {self.folder}/dask-scheduler.log")
            return sched_file.exists() and bool(sched_file.read_text().strip())

        wait_for(written, timeout=timeout, what=f"the Dask scheduler on port {self.port}")

    def scheduler_up(self) -> bool:
        return self.scheduler is not None and self.scheduler.poll() is None

    def kill_scheduler(self) -> None:
        if self.scheduler is not None:
            Processes.kill(self.scheduler)
            self.scheduler = None

    def start_worker(self) -> None:
        # --death-timeout: a worker outlives a Dask scheduler outage of a minute and then
        # joins the restarted scheduler (the nanny restarts a worker that lost it).
        argv = [str(BIN / "dask"), "worker", self.address, "--nthreads", str(self.nthreads),
                "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0",
                "--death-timeout", "60", "--nanny"]  # fmt: skip
        log_file = self.folder / f"dask-worker-{len(self.procs.started)}.log"
        worker = self.procs.spawn(argv, env=self.env, log=log_file)
        self.workers.append(worker)
        self.worker_logs[worker.pid] = log_file

    def _has_registered(self, worker: subprocess.Popen[bytes]) -> bool:
        if worker.pid not in self.registered:
            try:
                text = self.worker_logs[worker.pid].read_text(errors="replace")
            except OSError:
                return False
            if "Registered to:" not in text:
                return False
            self.registered.add(worker.pid)
        return True

    def kill_worker(self, rng: random.Random) -> bool:
        """SIGKILL a worker chosen by ``rng`` (nanny and worker at once) and start another,
        once every worker has joined the scheduler; False (nothing killed) until then.

        The scenario is a cluster at full strength losing a worker now and then. On a
        loaded machine a worker can take longer to start than the time between two
        faults: killing replacements as they start left the cluster without any worker
        (a CI run saw 36 of 41 killed before they joined, and no worker for 83 s), and
        killing the one joined worker again and again fails every task on it with
        KilledWorker until its retries run out. Both measure the machine, not airdask."""
        joined = [w for w in self.workers if self._has_registered(w)]
        if len(joined) < self.size:
            return False
        victim = joined[rng.randrange(len(joined))]
        self.workers.remove(victim)
        Processes.kill(victim)
        self.start_worker()
        return True

    def replace_dead_workers(self) -> int:
        """Start a worker for each that exited on its own; how many were replaced."""
        dead = [w for w in self.workers if w.poll() is not None]
        for proc in dead:
            self.workers.remove(proc)
            self.procs.kill(proc)  # its group, should a child remain
            self.start_worker()
        return len(dead)

    def client(self, *, timeout: float) -> Any:
        from distributed import Client

        return Client(self.address, timeout=timeout, set_as_default=False)

    def wait_for_workers(self, *, timeout: float) -> None:
        with self.client(timeout=timeout) as client:
            client.wait_for_workers(self.size, timeout=timeout)

    def held(self, *, timeout: float) -> tuple[int, int]:
        """(tasks the Dask scheduler still knows, datasets published), polled until both are
        0 or ``timeout`` passed (a client's releases reach the scheduler asynchronously)."""

        def count_tasks(dask_scheduler: Any) -> int:  # nested: pickled by value
            return len(dask_scheduler.tasks)

        with self.client(timeout=60) as client:
            counts = (-1, -1)

            def empty() -> bool:
                nonlocal counts
                counts = (client.run_on_scheduler(count_tasks), len(client.list_datasets()))
                return counts == (0, 0)

            try:
                wait_for(empty, timeout=timeout, what="the Dask scheduler to forget the run")
            except AssertionError:
                log.info("Dask scheduler still holds %s tasks and %s datasets", *counts)
            return counts

    def stop(self) -> None:
        """Workers first (all at once), then the scheduler; SIGKILL what does not stop."""
        Processes.stop_all(self.workers, timeout=20)
        Processes.stop_all([self.scheduler] if self.scheduler else [], timeout=20)
