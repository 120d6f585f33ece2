"""The airdask side of one scenario: its AIRDASK_HOME with the ledger DAG, the real CLI
(``airdask pools set``, ``airdask dags trigger``), ``airdask scheduler`` subprocesses, and
reading the outcome back from the metadata database."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from airdask.store import DagRun, Log, Store, TaskInstance
from chaos.procs import Processes

log = logging.getLogger("chaos")
AIRDASK = [sys.executable, "-m", "airdask.cli"]
DAG_ID = "chaos"
POOL = "chaos_pool"

#: Each command appends ``task try pid start|end time`` to the ledger ($0), with the run
#: context the runner gives it, and sleeps ($1) in between.
SCRIPT = (
    'echo "$AIRDASK_CTX_TASK_ID $AIRDASK_CTX_TRY_NUMBER $$ start $EPOCHREALTIME" >> "$0"; '
    'sleep "$1"; '
    'echo "$AIRDASK_CTX_TASK_ID $AIRDASK_CTX_TRY_NUMBER $$ end $EPOCHREALTIME" >> "$0"'
)

DAG_FILE = """\
from airdask.dag import DAG, CommandTask

SCRIPT = {script!r}
LEDGER = {ledger!r}
SLEEPS = {sleeps!r}
POOLED = {pooled!r}


def task(task_id, seconds, **kwargs):
    return CommandTask(task_id, ["bash", "-c", SCRIPT, LEDGER, f"{{seconds:.2f}}"], **kwargs)


with DAG({dag_id!r}, default_args={{"retries": 3, "retry_delay": 1}}) as dag:
    start = task("start", 0.1)
    middle = [
        task(f"t{{i:03d}}", s, **({{"pool": {pool!r}}} if i < POOLED else {{}}))
        for i, s in enumerate(SLEEPS)
    ]
    end = task("end", 0.1)
    start >> middle >> end
"""

#: Recovery settings short enough for a scenario to see adoption several times.
SCHEDULER_ENV = {
    "AIRDASK__SCHEDULER__JOB_HEARTBEAT_SEC": "0.5",
    "AIRDASK__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "5",
    "AIRDASK__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "1",
}

FINAL = ("success", "failed")
#: What ``airdask scheduler`` prints once its executor started and its job is registered.
READY = re.compile(r"^scheduler job \d+ running", re.MULTILINE)


def middle_ids(tasks: int) -> list[str]:
    return [f"t{i:03d}" for i in range(tasks)]


@dataclass
class Results:
    """What the database says at the end: TIs ``task -> (state, try_number, pool)``, and
    the Log rows of the run as ``(event, task, try, extra, epoch seconds)``."""

    run_state: str | None
    tis: dict[str, tuple[str | None, int, str]]
    logs: list[tuple[str, str | None, int | None, str | None, float]]


class Home:
    """An AIRDASK_HOME on ``db_url`` whose executor is the DaskExecutor on ``cluster``."""

    def __init__(
        self,
        folder: Path,
        procs: Processes,
        *,
        cluster: str,
        db_url: str,
        run_id: str,
        parallelism: int | None = None,
    ) -> None:
        self.folder = folder
        self.procs = procs
        self.path = folder / "home"
        (self.path / "dags").mkdir(parents=True)
        self.ledger = folder / "ledger"
        self.ledger.touch()
        self.run_id = run_id
        self.db_url = db_url
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIRDASK")}
        self.env.update(
            AIRDASK_HOME=str(self.path),
            AIRDASK__CORE__EXECUTOR="DaskExecutor",
            AIRDASK__DASK__CLUSTER_ADDRESS=cluster,
            AIRDASK__DATABASE__SQL_ALCHEMY_CONN=db_url,
            COLUMNS="200",
            PYTHONUNBUFFERED="1",  # its log shows what it did up to a SIGKILL
            **SCHEDULER_ENV,
        )
        if parallelism is not None:
            self.env["AIRDASK__CORE__PARALLELISM"] = str(parallelism)
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.schedulers = 0
        self._log = folder / "airdask-scheduler-0.log"
        self._ready_at: float | None = None
        self._store: Store | None = None

    def write_dag(self, *, tasks: int, pooled: int, rng: random.Random) -> None:
        sleeps = [round(rng.uniform(0.1, 1.5), 2) for _ in range(tasks)]
        text = DAG_FILE.format(
            script=SCRIPT,
            ledger=str(self.ledger),
            sleeps=sleeps,
            pooled=pooled,
            dag_id=DAG_ID,
            pool=POOL,
        )
        (self.path / "dags" / f"{DAG_ID}.py").write_text(text)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*AIRDASK, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"airdask {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def trigger(self) -> None:
        self.cli("dags", "trigger", DAG_ID, "--run-id", self.run_id)

    def start_scheduler(self) -> None:
        self.schedulers += 1
        self._log = self.folder / f"airdask-scheduler-{self.schedulers}.log"
        self._ready_at = None
        self.scheduler = self.procs.spawn([*AIRDASK, "scheduler"], env=self.env, log=self._log)

    def ready_at(self) -> float | None:
        """When the harness first saw the running scheduler ready (its executor started,
        its job registered: the line ``scheduler job N running ...``), else None."""
        if self._ready_at is None and self.scheduler is not None:
            with contextlib.suppress(FileNotFoundError):
                if READY.search(self._log.read_text(errors="replace")):
                    self._ready_at = time.monotonic()
        return self._ready_at if self.scheduler is not None else None

    def scheduler_exited(self) -> bool:
        """True if the scheduler was running and exited without being told to."""
        return self.scheduler is not None and self.scheduler.poll() is not None

    def kill_scheduler(self) -> None:
        if self.scheduler is not None:
            Processes.kill(self.scheduler)
            self.scheduler = None

    def stop_scheduler(self, *, timeout: float) -> bool:
        """SIGTERM the scheduler; False if it had to be SIGKILLed after ``timeout``."""
        proc, self.scheduler = self.scheduler, None
        return proc is None or Processes.stop_all([proc], timeout=timeout)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.from_url(self.db_url)
        return self._store

    def run_state(self) -> str | None:
        """The run's state, or None while the database cannot be read (it restarts)."""
        try:
            with self.store.session() as session:
                run = session.get(DagRun, (DAG_ID, self.run_id))
                return run.state if run is not None else None
        except DBAPIError:
            self.store.engine.dispose()
            return None

    def results(self) -> Results:
        with self.store.session() as session:
            run = session.get(DagRun, (DAG_ID, self.run_id))
            tis = session.scalars(
                select(TaskInstance).where(
                    TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == self.run_id
                )
            )
            ti_rows = {ti.task_id: (ti.state, ti.try_number, ti.pool) for ti in tis}
            logs = session.scalars(
                select(Log).where(Log.dag_id == DAG_ID, Log.run_id == self.run_id).order_by(Log.id)
            )
            log_rows = [
                (r.event, r.task_id, r.try_number, r.extra, r.dttm.timestamp()) for r in logs
            ]
            return Results(run.state if run else None, ti_rows, log_rows)

    def close(self) -> None:
        if self._store is not None:
            self._store.dispose()
