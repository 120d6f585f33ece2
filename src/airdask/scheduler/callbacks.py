"""Task callbacks: the executor's ``callback_sink``, run in the scheduler process.

The scheduler sends a :class:`TaskCallbackRequest` through ``executor.send_callback`` when a
task instance succeeds or finally fails; :class:`CallbackSink` keeps them and
:meth:`CallbackSink.run_pending` calls each task's ``on_success_callback`` /
``on_failure_callback`` with a context dict. A callback that raises is logged (and recorded
in the Log table) and changes nothing else.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from airdask.dag import DAG, BaseTask
from airdask.store.models import DagRun, TaskInstance, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskCallbackRequest:
    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    state: str  # "success" or "failed"
    reason: str | None = None
    conf: dict[str, Any] | None = None

    @property
    def kind(self) -> str:
        return "on_success_callback" if self.state == "success" else "on_failure_callback"


@dataclass
class CallbackResult:
    request: TaskCallbackRequest
    error: str | None = None


@dataclass
class CallbackSink:
    """Collects callback requests; the scheduler runs them after each pass."""

    pending: list[Any] = field(default_factory=list)

    def send(self, request: Any) -> None:
        self.pending.append(request)

    def run_pending(self, dag_for: Callable[[str], DAG | None]) -> list[CallbackResult]:
        """Run every pending request; never raises for a callback's own error."""
        requests, self.pending = self.pending, []
        results = []
        for request in requests:
            if not isinstance(request, TaskCallbackRequest):
                log.warning("ignoring unknown callback request %r", request)
                continue
            results.append(CallbackResult(request, _run_one(request, dag_for)))
        return results


def _run_one(request: TaskCallbackRequest, dag_for: Callable[[str], DAG | None]) -> str | None:
    dag = dag_for(request.dag_id)
    if dag is None or not dag.has_task(request.task_id):
        return f"no task {request.dag_id}.{request.task_id} to call {request.kind} of"
    callback = getattr(dag.get_task(request.task_id), request.kind)
    if callback is None:
        return None
    context = {
        "dag_id": request.dag_id,
        "task_id": request.task_id,
        "run_id": request.run_id,
        "try_number": request.try_number,
        "state": request.state,
        "reason": request.reason,
        "conf": request.conf or {},
        "dag": dag,
        "task": dag.get_task(request.task_id),
    }
    try:
        callback(context)
    except Exception as exc:  # the user's callback must not stop the scheduler
        log.error(
            "%s of %s.%s failed: %s\n%s",
            request.kind,
            request.dag_id,
            request.task_id,
            exc,
            traceback.format_exc(),
        )
        return f"{type(exc).__name__}: {exc}"
    return None


def callback_requests(
    session: Session,
    finished: Iterable[TaskInstance],
    task_of: Callable[[TaskInstance], BaseTask | None],
) -> list[TaskCallbackRequest]:
    """The requests for the callbacks of task instances that just finished (``task_of``
    finds a TI's task, or None when its DAG is not loaded)."""
    requests = []
    for ti in finished:
        task = task_of(ti)
        if task is None:
            continue
        wanted = task.on_success_callback if ti.state == "success" else task.on_failure_callback
        if wanted is None:
            continue
        run = session.get(DagRun, (ti.dag_id, ti.run_id))
        requests.append(
            TaskCallbackRequest(
                ti.dag_id,
                ti.task_id,
                ti.run_id,
                ti.try_number,
                ti.state or "",
                ti.reason,
                run.conf if run is not None else None,
            )
        )
    return requests


def log_rows(results: Iterable[CallbackResult]) -> list[dict[str, Any]]:
    """A Log row (as insert values) per callback that ran."""
    return [
        {
            "dttm": utcnow(),
            "event": "callback_failed" if result.error else "callback",
            "dag_id": result.request.dag_id,
            "task_id": result.request.task_id,
            "run_id": result.request.run_id,
            "try_number": result.request.try_number,
            "extra": f"{result.request.kind}: {result.error or 'ok'}",
        }
        for result in results
    ]
