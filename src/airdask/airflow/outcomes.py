"""What an event of airdask's Dask backend means for Airflow.

Airflow's scheduler treats a SUCCESS or FAILED event for a task that is still queued or
running (and that the executor no longer holds) as "killed externally" and fails it, so an
event is reported only when the workload's process has really ended. Two backend outcomes do
not say that: a lost connection to the Dask scheduler (outcome unknown) and a start refused by
the API server because the task already runs elsewhere (409). For those the executor reports
nothing and keeps the task (see ``DaskExecutor._hold``) until Airflow's own machinery (task
heartbeats, ``task_queued_timeout``) or the database says how it ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airdask.airflow import worker_script as ws

#: Report nothing, keep holding the task.
HOLD = "hold"
SUCCESS = "success"
FAILED = "failed"

_EXIT_REASONS = {
    ws.EXIT_TASK_FAILED: "the task failed (its supervisor reported the state to the API server)",
    ws.EXIT_BAD_WORKLOAD: "the worker could not read the workload",
    ws.EXIT_API_UNREACHABLE: "the worker cannot reach Airflow's Execution API",
    ws.EXIT_SUPERVISOR_ERROR: "the task's supervisor failed on the worker",
    ws.EXIT_NO_TASK_SDK: "the Dask worker has no Apache Airflow task SDK",
    ws.EXIT_TOKEN_REFUSED: "the API server refused the workload's token",
}

_HINTS = {
    "no_worker": "start a Dask worker that offers it (dask worker --resources NAME=N), or "
    "change the task's queue or pool; [dask] pool_resources decides for pools no worker offers",
    "worker_died": "the Dask worker running it died; Airflow retries it per the task's retries",
    "not_found": "set [dask] worker_python to an interpreter that exists on the workers",
    "submit_error": "check that [dask] cluster_address names a running Dask scheduler",
}


@dataclass(frozen=True)
class Verdict:
    action: str  # HOLD, SUCCESS or FAILED
    reason: str


def needs_log(info: Any) -> bool:
    """Whether the reason is in the attempt's console output (the worker script's
    ``airdask-reason:`` line), which is only read for these rare outcomes."""
    code = getattr(info, "exit_code", None)
    return getattr(info, "kind", None) == "exit_code" and code not in (None, 0, 1)


def reason_from_log(lines: list[str]) -> str | None:
    for line in reversed(lines):
        at = line.find(ws.REASON_PREFIX)
        if at >= 0:
            return line[at + len(ws.REASON_PREFIX) :].strip()
    return None


def verdict(state: str, info: Any, *, logged_reason: str | None = None) -> Verdict:
    """Turn a backend SUCCESS/FAILED event into what Airflow is told."""
    reason = str(info) if info is not None else state
    kind = getattr(info, "kind", None)
    if state == "success":
        return Verdict(SUCCESS, reason)
    if kind == "connection_lost":
        return Verdict(HOLD, f"outcome unknown: {reason}")
    if kind == "exit_code":
        code = getattr(info, "exit_code", None)
        if code == ws.EXIT_ALREADY_RUNNING:
            return Verdict(HOLD, logged_reason or "the task already runs elsewhere (409)")
        base = _EXIT_REASONS.get(code) if isinstance(code, int) else None
        if base is not None:
            detail = f": {logged_reason}" if logged_reason else f" (exit code {code})"
            return Verdict(FAILED, base + detail if code != 1 else base)
    hint = _HINTS.get(str(kind))
    return Verdict(FAILED, f"{reason}; {hint}" if hint else reason)
