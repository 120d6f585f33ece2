"""Run one scenario: set it up, drive the run through its faults, stop everything, measure."""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from chaos.cluster import DaskCluster
from chaos.figures import Completions, Sampler, compute, merge_samples, read_ledger
from chaos.home import FINAL, POOL, Home
from chaos.procs import Processes, kill_pids, live_commands, settle
from chaos.scenarios import FaultClock, Scenario
from pg_support import PrivatePostgres, private_postgres

log = logging.getLogger("chaos")

POLL = 0.2  # seconds between two looks at the processes (the run's state: every 0.5 s)
WATCH = 0.02  # between two looks at the ledger while a fault waits for a completion
RESTART_DELAY = 1.0  # before restarting an airdask scheduler that exited on its own
STOP_TIMEOUT = 60.0  # for an airdask scheduler to exit after SIGTERM
HELD_TIMEOUT = 8.0  # for the Dask scheduler to forget the run's keys (ms when all is well)
LEAK_TIMEOUT = 10.0  # for the run's commands to be gone after everything stopped
START_TIMEOUT = 120.0  # for a Dask scheduler or its workers to come up


class Driver:
    """Drives one triggered run through its faults until it ends or its deadline passes,
    restarting (like a process supervisor) whatever exits without being told to."""

    def __init__(
        self,
        spec: Scenario,
        *,
        seed: int,
        cluster: DaskCluster,
        home: Home,
        pg: PrivatePostgres | None,
    ) -> None:
        self.spec = spec
        self.seed = seed
        self.cluster = cluster
        self.home = home
        self.pg = pg
        self.sampler = Sampler(home.ledger)
        self.host_deaths: list[float] = []
        self.completions = Completions(home.ledger)
        self.scheduler_exits = 0
        self.worker_exits = 0
        self.restart_airdask_at: float | None = None
        self.clocks: list[FaultClock] = []
        self.t0 = 0.0

    def drive(self) -> int:
        """1 if the run did not end within the scenario's deadline, else 0. The faults
        start once the first airdask scheduler is ready; the deadline counts from now."""
        began = time.monotonic()
        next_poll = next_sample = began
        while True:
            now = time.monotonic()
            if now >= next_sample:
                next_sample = now + POLL
                self.sampler.sample()
                self._supervise(now)
            if now >= next_poll:
                next_poll = now + 0.5
                if self.home.run_state() in FINAL:
                    log.info("%s: run ended after %.1fs", self.spec.name, now - began)
                    return 0
            if now - began > self.spec.deadline:
                log.warning("%s: run still going after %.0fs", self.spec.name, now - began)
                return 1
            ready_at = self.home.ready_at()
            if not self.clocks and ready_at is not None:
                self.t0 = ready_at
                self.clocks = [
                    FaultClock.start(f, seed=self.seed, scenario=self.spec.name, t0=ready_at)
                    for f in self.spec.faults
                ]
            completed_at = self.completions.latest()
            for clock in self.clocks:
                self._step(clock, now, ready_at, completed_at)
            watching = any(c.waiting_for_completion(now) for c in self.clocks)
            time.sleep(WATCH if watching else POLL)

    def _step(
        self, clock: FaultClock, now: float, ready_at: float | None, completed_at: float | None
    ) -> None:
        kind = clock.fault.kind
        if clock.restart_at is not None and now >= clock.restart_at:
            clock.restart_at = None
            self.cluster.start_scheduler(timeout=START_TIMEOUT)
            log.info("%s: Dask scheduler restarted at %.1fs", self.spec.name, now - self.t0)
            return
        if not clock.is_due(now, ready_at, completed_at):
            return
        killed_at = time.time()  # wall clock, as the ledger's times
        if kind == "worker" and not self.cluster.kill_worker(clock.rng):
            return  # a replacement has not joined yet: the fault waits for it
        log.info("%s: %s fault at %.1fs", self.spec.name, kind, now - self.t0)
        if kind == "worker":
            self.host_deaths.append(killed_at)
        elif kind == "airdask_scheduler":
            self.home.kill_scheduler()
            self.home.start_scheduler()
            self.restart_airdask_at = None  # one scheduler at a time
        elif kind == "dask_scheduler":
            self.cluster.kill_scheduler()
        else:
            assert self.pg is not None, "a postgres fault needs a PostgreSQL scenario"
            self.pg.restart()
        clock.fired(now, self.t0)

    def _supervise(self, now: float) -> None:
        if self.home.scheduler_exited():
            assert self.home.scheduler is not None
            self.scheduler_exits += 1
            log.warning(
                "%s: airdask scheduler exited on its own (code %s) at %.1fs",
                self.spec.name,
                self.home.scheduler.returncode,
                now - self.t0,
            )
            self.home.scheduler = None
            self.restart_airdask_at = now + RESTART_DELAY
        if self.restart_airdask_at is not None and now >= self.restart_airdask_at:
            self.restart_airdask_at = None
            self.home.start_scheduler()
        self.worker_exits += self.cluster.replace_dead_workers()

    def faults(self) -> dict[str, list[float]]:
        return {c.fault.kind: c.times for c in self.clocks}


def _trigger(home: Home, spec: Scenario) -> None:
    if spec.pooled:
        home.cli("pools", "set", POOL, str(spec.pool_slots))
    home.trigger()


def run_scenario(
    spec: Scenario, *, seed: int, procs: Processes, folder: Path, size: str
) -> dict[str, Any]:
    """Run ``spec`` in ``folder`` and return its JSON line (as a dict). Every process it
    started is SIGKILLed (by process group) on the way out, whatever happens."""
    began = time.monotonic()
    run_id = f"chaos_{spec.name}_{secrets.token_hex(4)}"
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(private_postgres()) if spec.needs_postgres else None
        stack.callback(lambda: kill_pids(live_commands(run_id)))
        stack.callback(procs.kill_all)
        db_url = pg.url if pg else f"sqlite:///{folder}/home/airdask.db"
        cluster = DaskCluster(folder, procs)
        home = Home(
            folder,
            procs,
            cluster=cluster.address,
            db_url=db_url,
            run_id=run_id,
            parallelism=spec.parallelism,
        )
        stack.callback(home.close)
        home.write_dag(
            tasks=spec.tasks, pooled=spec.pooled, rng=random.Random(f"{seed}:{spec.name}:dag")
        )
        # The trigger needs the database only: it runs while the cluster starts.
        with ThreadPoolExecutor(1) as pool:
            triggered = pool.submit(_trigger, home, spec)
            cluster.start(timeout=START_TIMEOUT)
            triggered.result()
        home.start_scheduler()
        log.info("%s: run %s triggered on %s (seed %s)", spec.name, run_id, cluster.address, seed)
        driver = Driver(spec, seed=seed, cluster=cluster, home=home, pg=pg)
        started = time.monotonic()
        hung = driver.drive()
        run_seconds = time.monotonic() - started
        if not cluster.scheduler_up():  # the run ended during an outage
            cluster.start_scheduler(timeout=START_TIMEOUT)
        if not home.stop_scheduler(timeout=STOP_TIMEOUT):
            log.warning("%s: the airdask scheduler ignored SIGTERM", spec.name)
            hung += 1
        results = home.results()
        log.info("%s: airdask scheduler stopped", spec.name)
        held = cluster.held(timeout=HELD_TIMEOUT)
        driver.sampler.sample()
        cluster.stop()
        log.info("%s: Dask cluster stopped", spec.name)
        left = settle(lambda: live_commands(run_id), timeout=LEAK_TIMEOUT)
        attempts, unreadable = read_ledger(home.ledger)
        merge_samples(attempts, driver.sampler)
        figures, info = compute(
            results,
            attempts,
            pool_slots=spec.pool_slots,
            leaked=len(left),
            held=held,
            scheduler_exits=driver.scheduler_exits,
            hung=hung,
            host_deaths=driver.host_deaths,
        )
    info.update(
        run_seconds=round(run_seconds, 1),
        faults=driver.faults(),
        worker_exits=driver.worker_exits,
        airdask_schedulers=home.schedulers,
        samples=driver.sampler.samples,
        unreadable_ledger_lines=unreadable,
        folder=str(folder),
    )
    return {
        "scenario": spec.name,
        "size": size,
        "seed": seed,
        "tasks": spec.tasks + 2,
        "seconds": round(time.monotonic() - began, 1),
        "figures": figures,
        "info": info,
    }
