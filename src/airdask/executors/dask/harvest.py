"""What Dask says about an attempt, as (state, EventInfo, log).

Outcomes arrive as pushed events (:func:`from_outcome`: the runner's, or the keeper's for
what the runner could not report; ADR 0003). A future tells only what Dask reports to the
submitting client alone (:func:`from_future`): a task graph the scheduler could not load,
and the cancellation of every future when the client loses its scheduler, which is not an
outcome (the executor reconciles with the keeper once it is connected again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airdask.executors.dask.ops import OUR_CANCEL_PREFIX
from airdask.executors.events import EventInfo, OutcomeKind, info_from_outcome
from airdask.state import TaskInstanceState

#: Cancel reasons that mean the client lost its scheduler: the outcome is unknown.
CONNECTION_LOST_REASONS = ("scheduler-connection-lost", "scheduler-restart")


@dataclass
class Harvested:
    state: TaskInstanceState
    info: EventInfo
    log_text: str | None
    #: log_text is the tail of a longer log that its worker keeps (runner.take_kept_logs)
    log_kept: bool = False


def from_outcome(result: Any, external_id: str) -> Harvested:
    """A pushed outcome (the runner's Outcome dict, or the keeper's in its shape)."""
    if not isinstance(result, dict) or "state" not in result:
        return Harvested(
            TaskInstanceState.FAILED,
            EventInfo(
                f"runner returned {type(result).__name__}, not an outcome",
                kind="error",
                external_executor_id=external_id,
            ),
            None,
        )
    info = info_from_outcome(result, external_executor_id=external_id)
    state = TaskInstanceState.SUCCESS if result["state"] == "success" else TaskInstanceState.FAILED
    return Harvested(state, info, result.get("log"), bool(result.get("log_kept")))


def from_exception(exc: BaseException | None, external_id: str) -> Harvested:
    """A future in state "error": the runner never raises, so this is Dask's."""
    from distributed.scheduler import KilledWorker

    kind: OutcomeKind
    if isinstance(exc, KilledWorker):
        reason, kind = f"worker died while running the task (KilledWorker): {exc}", "worker_died"
    else:
        reason, kind = f"dask error: {type(exc).__name__}: {exc}", "error"
    info = EventInfo(reason, kind=kind, external_executor_id=external_id)
    return Harvested(TaskInstanceState.FAILED, info, None)


def from_cancel(reason: str | None, msg: str | None, external_id: str) -> Harvested:
    """A future cancelled by this executor (revoke, terminate) or by Dask."""
    reason = reason or "unknown"
    if reason.startswith(OUR_CANCEL_PREFIX):
        text = reason[len(OUR_CANCEL_PREFIX) :].strip()
    else:
        text = f"cancelled by Dask ({reason})" + (f": {msg}" if msg else "")
    info = EventInfo(text, kind="killed", external_executor_id=external_id)
    return Harvested(TaskInstanceState.FAILED, info, None)


def from_future(future: Any, external_id: str) -> Harvested | None:
    """What a done future reports, or None when it is not an outcome (see the module)."""
    from distributed.client import FutureCancelledError

    status = future.status
    if status == "error":
        try:
            exc = future.exception(timeout=1)  # done: no wait
        except Exception as err:
            exc = err
        return from_exception(exc, external_id)
    if status != "cancelled":  # finished: its outcome is pushed
        return None
    reason = msg = None
    try:
        future.result(timeout=1)
    except FutureCancelledError as err:
        reason, msg = err.reason, err.msg
    except Exception as err:
        reason = f"{type(err).__name__}: {err}"
    if reason in CONNECTION_LOST_REASONS:
        return None
    return from_cancel(reason, msg, external_id)
