"""Harvesting finished Dask futures: classify each outcome into (state, EventInfo, log).

Which futures finished is learnt from :mod:`airdask.executors.dask.done`; this module turns
them into task states (:mod:`airdask.executors.dask.task_logs` writes their logs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airdask.executors.dask.ops import OUR_CANCEL_PREFIX
from airdask.executors.events import EventInfo, info_from_outcome
from airdask.state import TaskInstanceState

#: Cancel reasons that mean the client lost its scheduler: the outcome is unknown.
CONNECTION_LOST_REASONS = ("scheduler-connection-lost", "scheduler-restart")


@dataclass
class Harvested:
    state: TaskInstanceState
    info: EventInfo
    log_text: str | None

    def with_external(self, external_id: str) -> Harvested:
        self.info.external_executor_id = external_id
        return self


def from_result(result: Any, external_id: str) -> Harvested:
    """A finished future's value: the runner's Outcome dict."""
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
    return Harvested(state, info, result.get("log"))


def from_exception(exc: BaseException | None, external_id: str) -> Harvested:
    """A future in state "error": the runner never returns errors, so this is Dask's."""
    from distributed.scheduler import KilledWorker

    if isinstance(exc, KilledWorker):
        reason = f"worker died while running the task (KilledWorker): {exc}"
        return Harvested(
            TaskInstanceState.FAILED, EventInfo(reason, kind="worker_died"), None
        ).with_external(external_id)
    reason = f"dask error: {type(exc).__name__}: {exc}"
    return Harvested(TaskInstanceState.FAILED, EventInfo(reason, kind="error"), None).with_external(
        external_id
    )


def from_cancel(reason: str | None, msg: str | None, external_id: str) -> Harvested:
    reason = reason or "unknown"
    if reason.startswith(OUR_CANCEL_PREFIX):
        text = reason[len(OUR_CANCEL_PREFIX) :].strip()
        info = EventInfo(text, kind="killed")
    elif reason in CONNECTION_LOST_REASONS:
        info = EventInfo(
            f"lost the Dask scheduler ({reason}): the outcome of the task is unknown",
            kind="connection_lost",
        )
    else:
        detail = f": {msg}" if msg else ""
        info = EventInfo(f"cancelled by Dask ({reason}){detail}", kind="killed")
    return Harvested(TaskInstanceState.FAILED, info, None).with_external(external_id)


def classify_batch(
    client: Any,
    items: list[tuple[str, Any]],
    ext: dict[str, str],
    pushed: Callable[[str], dict[str, Any] | None] = lambda _: None,
) -> dict[str, Harvested]:
    """Classify finished futures. An outcome the runner pushed (``pushed(name)``) is used as
    it is; the results of the other successful futures are gathered in one request."""
    from distributed.client import FutureCancelledError

    out: dict[str, Harvested] = {}
    finished: list[tuple[str, Any]] = []
    for dask_key, future in items:
        external_id = ext.get(dask_key, dask_key)
        status = future.status
        if status == "finished":
            outcome = pushed(dask_key)
            if outcome is not None:
                out[dask_key] = from_result(outcome, external_id)
            else:
                finished.append((dask_key, future))
        elif status == "error":
            try:
                exc = future.exception(timeout=5)
            except Exception as err:
                exc = err
            out[dask_key] = from_exception(exc, external_id)
        else:  # cancelled (by us, or because the scheduler is gone)
            reason = msg = None
            try:
                future.result(timeout=1)
            except FutureCancelledError as err:
                reason, msg = err.reason, err.msg
            except Exception as err:
                reason = f"{type(err).__name__}: {err}"
            out[dask_key] = from_cancel(reason, msg, external_id)
    if finished:
        try:
            results = client.gather([f for _, f in finished])
            pairs = list(zip(finished, results, strict=True))
        except Exception:
            pairs = [((k, f), _one_result(f)) for k, f in finished]
        for (dask_key, _), result in pairs:
            external_id = ext.get(dask_key, dask_key)
            if isinstance(result, _Failed):
                out[dask_key] = from_exception(result.exc, external_id)
            else:
                out[dask_key] = from_result(result, external_id)
    return out


@dataclass
class _Failed:
    exc: BaseException


def _one_result(future: Any) -> Any:
    try:
        return future.result(timeout=30)
    except BaseException as exc:
        return _Failed(exc)
