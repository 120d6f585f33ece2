"""Helpers for the tests of several schedulers and of database outages: ledger DAGs (each
task appends ``start|end NAME TIME PID`` to a file) and quick failure-detection settings."""

from __future__ import annotations

from pathlib import Path

from task_funcs import ledger_step_source

#: Quick failure detection for the tests (the defaults are 5 s / 30 s / 30 s); the threshold
#: leaves room for a pass slowed down by a busy machine.
FAST_RECOVERY = {
    "AIRDASK__SCHEDULER__JOB_HEARTBEAT_SEC": "0.2",
    "AIRDASK__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "4",
    "AIRDASK__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "0.5",
}

LEDGER_DAG = """
from airdask.dag import DAG, BashTask

{step}

with DAG({dag_id!r}) as dag:
    first = BashTask("first", step("first", 0))
    middle = [BashTask(f"m{{i:03d}}", step(f"m{{i:03d}}", 0.05 + (i % 7) * 0.05))
              for i in range({width})]
    last = BashTask("last", step("last", 0))
    first >> middle >> last
"""


def write_dag(folder: Path, dag_id: str, ledger: Path, width: int) -> Path:
    path = folder / f"{dag_id}.py"
    path.write_text(LEDGER_DAG.format(step=ledger_step_source(ledger), dag_id=dag_id, width=width))
    return path
