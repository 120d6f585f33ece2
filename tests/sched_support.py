"""Helpers for scheduler tests: a store in a temp AIRDASK_HOME, running a SchedulerJob
in-process until a run finishes, running the ``airdask`` CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from airdask.config import Config, load_config
from airdask.dag import DAG
from airdask.executors import BaseExecutor, load_executor
from airdask.scheduler.loop import SchedulerJob
from airdask.scheduler.runs import create_run
from airdask.scheduler.single_run import drive_run
from airdask.store import DagRun, Log, Store, TaskInstance, init_db

AIRDASK = [sys.executable, "-m", "airdask.cli"]


def make_store(config: Config) -> Store:
    store = Store.from_config(config)
    init_db(store, default_pool_slots=128)
    return store


def run_dag(
    store: Store,
    config: Config,
    dag: DAG,
    *,
    executor: BaseExecutor | str = "SequentialExecutor",
    conf: dict[str, Any] | None = None,
    timeout: float = 60,
    **executor_kwargs: Any,
) -> tuple[str, dict[str, TaskInstance]]:
    """Trigger ``dag`` and run a SchedulerJob until the run finishes; (run state, TIs)."""
    if isinstance(executor, str):
        executor = load_executor(executor, config=config, **executor_kwargs)
    job = SchedulerJob(store=store, executor=executor, config=config, dags={dag.dag_id: dag})
    outcome = drive_run(job, dag, conf=conf, timeout=timeout, handle_signals=False)
    if outcome.timed_out:
        raise AssertionError(f"run {outcome.run_id} did not finish within {timeout}s")
    return outcome.state or "", tis_of(store, dag.dag_id, outcome.run_id)


def run_in_thread(job: SchedulerJob, dag: DAG) -> tuple[str, threading.Thread]:
    """Register ``job`` as the owner of a new run of ``dag`` and run it in a daemon thread
    until that run succeeds; the run id and the thread."""
    job_id = job.register()
    with job.store.session() as session:
        run_id = create_run(session, dag, scheduled_by_job_id=job_id).run_id
    job.run_filter = [(dag.dag_id, run_id)]
    thread = threading.Thread(
        target=job.run,
        kwargs={"until": lambda: run_state(job.store, dag.dag_id, run_id) == "success",
                "handle_signals": False},
        daemon=True,
    )  # fmt: skip
    thread.start()
    return run_id, thread


def run_state(store: Store, dag_id: str, run_id: str) -> str | None:
    with store.session() as session:
        run = session.get(DagRun, (dag_id, run_id))
        return run.state if run is not None else None


def tis_of(store: Store, dag_id: str, run_id: str) -> dict[str, TaskInstance]:
    with store.session() as session:
        rows = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        )
        return {ti.task_id: ti for ti in rows}


def log_events(store: Store, dag_id: str, **where: Any) -> list[Log]:
    with store.session() as session:
        stmt = select(Log).where(Log.dag_id == dag_id).order_by(Log.id)
        for name, value in where.items():
            stmt = stmt.where(getattr(Log, name) == value)
        return list(session.scalars(stmt))


def cli(
    *args: str,
    home: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``airdask ARGS`` in a subprocess with AIRDASK_HOME=home."""
    return subprocess.run(
        [*AIRDASK, *args],
        env=cli_env(home, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def scheduler_process(home: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """``airdask scheduler`` as a subprocess with AIRDASK_HOME=home, its stderr piped (to
    show when a test fails) and its stdout dropped."""
    return subprocess.Popen(
        [*AIRDASK, "scheduler"],
        env=cli_env(home, env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def cli_env(home: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AIRDASK")}
    full.update({"AIRDASK_HOME": str(home), "COLUMNS": "200", **(env or {})})
    return full


# ---- the live log of a running attempt (tests/e2e/test_run_e2e_{dask,celery}.py) --------

#: The attempt whose log the live-log tests read: DAG ``live``, task ``talk``, run ``r1``.
LIVE_TI = ("live", "talk", "r1")


@contextmanager
def live_task(home: Path, env: Mapping[str, str], release: Path) -> Iterator[None]:
    """``airdask scheduler`` running :data:`LIVE_TI`, which prints ``hello-live``, waits for
    the file ``release``, then prints ``bye``. Leaving releases it, waits for the run to
    succeed (unless the body raised) and stops the scheduler."""
    import signal

    from proc_support import wait_for

    (home / "dags").mkdir(parents=True, exist_ok=True)
    (home / "dags" / "live.py").write_text(
        "from airdask.dag import DAG, BashTask\n"
        "with DAG('live') as dag:\n"
        f"    BashTask('talk', 'echo hello-live; while [ ! -e {release} ]; do sleep 0.05; done;"
        " echo bye')\n"
    )
    dag_id, _, run_id = LIVE_TI
    assert cli("dags", "trigger", dag_id, "--run-id", run_id, home=home, env=env).returncode == 0
    proc = subprocess.Popen(
        [*AIRDASK, "scheduler"], env=cli_env(home, env), stderr=subprocess.PIPE, text=True
    )
    store = Store.from_config(load_config({"AIRDASK_HOME": str(home)}))
    try:
        yield
        release.touch()
        wait_for(lambda: run_state(store, dag_id, run_id) == "success", timeout=60, what="run")
    finally:
        release.touch()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        store.dispose()


def wait_for_log_line(
    home: Path, env: Mapping[str, str], line: str, *, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``airdask tasks logs`` of :data:`LIVE_TI` until ``line`` is one of its output lines
    (the attempt has printed it, wherever it runs); that answer."""
    from proc_support import wait_for

    answers: list[subprocess.CompletedProcess[str]] = []

    def has_line() -> bool:
        answers.append(cli("tasks", "logs", *LIVE_TI, home=home, env=env))
        return answers[-1].returncode == 0 and line in answers[-1].stdout.splitlines()

    wait_for(has_line, timeout=timeout, what=f"{line!r} in the log of {LIVE_TI}")
    return answers[-1]
