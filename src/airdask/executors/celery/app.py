"""The Celery app (built from :class:`~.settings.CeleryOptions` when the executor starts
or a worker boots, never at import) and the task that runs an attempt on a worker.

The task, ``airdask.run_attempt``, hands the attempt to :func:`airdask.runner.run_task`, so a
command runs as under every airdask executor: in its own process group, its log captured
(to a worker-local file, returned with the outcome, then removed), its group killed on
timeout, on revoke (Celery's ``terminate`` signals the pool process, whose death the
runner's reaper follows by killing the group), and when the worker dies (prefork children
die with their parent, ``PR_SET_PDEATHSIG``; the reaper then kills the groups).

Delivery (ADR 0007): ``acks_late`` and ``reject_on_worker_lost``, so the message of an
attempt whose worker was SIGKILLed is delivered again, to a worker that runs it while the
first copy is already dead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.worker.control import inspect_command

from airdask import runner
from airdask.executors.celery.messages import from_message
from airdask.masking import redact
from airdask.supervision import log_text

if TYPE_CHECKING:
    from airdask.executors.celery.settings import CeleryOptions

log = logging.getLogger(__name__)

TASK_NAME = "airdask.run_attempt"
#: A worker's folder of running attempts' logs (set by ``airdask celery worker`` for its
#: pool processes; the control command reads live logs from there).
LOG_DIR_ENV = "AIRDASK_CELERY_LOG_DIR"
#: Suffix of the result id under which a withdrawn attempt is marked: a worker that never
#: heard the revoke broadcast (started after it) still finds the mark and skips the attempt.
WITHDRAWN_SUFFIX = ".withdrawn"
WITHDRAWN_STATE = "REVOKED"


def worker_log_dir() -> str:
    return os.environ.get(LOG_DIR_ENV) or os.path.join(
        tempfile.gettempdir(), f"airdask-celery-logs-{os.getuid()}"
    )


def make_app(settings: CeleryOptions) -> Celery:
    """A Celery app for ``settings``; connects to nothing until it is used."""
    timeout = settings.celery.operation_timeout
    app = Celery("airdask", broker=settings.celery.broker_url, backend=settings.result_backend,
                 set_as_current=False)  # fmt: skip
    app.conf.update(
        # JSON only, both ways (ADR 0007): a pickled command is base64 inside the JSON.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # At least once: a message is acknowledged when its attempt ended, and given back
        # when the pool process running it died (ADR 0007).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_track_started=True,
        worker_prefetch_multiplier=1,
        # A worker that loses the broker cancels its attempts: the broker delivers their
        # messages again anyway, and two copies must not run side by side.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_default_queue=settings.celery.default_queue,
        task_default_exchange=settings.celery.default_queue,
        task_default_routing_key=settings.celery.default_queue,
        task_create_missing_queues=True,
        result_expires=86400,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        broker_connection_timeout=timeout,
        broker_connection_retry_on_startup=False,
        broker_transport_options={
            "visibility_timeout": settings.celery.visibility_timeout,
            # Redis: look for the messages of dead workers every 10 s rather than kombu's
            # default of every 10th 10 s interval, so a SIGKILLed worker's task comes back
            # soon after its visibility timeout (other transports ignore the option).
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": timeout,
        },
        task_publish_retry_policy={
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
        redis_socket_connect_timeout=timeout,
        redis_socket_timeout=timeout,
        redis_retry_on_timeout=False,
        database_engine_options={"pool_pre_ping": True},
        airdask_allow_pickle=settings.celery.allow_pickle,
        airdask_log_max_bytes=settings.celery.log_max_bytes,
    )
    app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)(run_attempt)
    return app


def run_attempt(task: Any, message: Any) -> dict[str, Any]:
    """The worker side of one attempt: its outcome (a runner Outcome, plain JSON).

    A message this worker refuses (pickled while ``allow_pickle`` is off, malformed) raises
    ``ValueError``: the attempt fails with that reason and nothing runs."""
    spec = from_message(message, allow_pickle=bool(task.app.conf.airdask_allow_pickle))
    log_root = spec["log_root"] = worker_log_dir()
    spec["return_log"] = True
    if withdrawn(task.app, task.request.id):
        log.info("%s was withdrawn before it started; not running it", spec["label"])
        return _withdrawn_outcome(spec)
    try:
        outcome = runner.run_task(spec)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(log_root, spec["log_relpath"]))
    return dict(outcome)


def withdrawn(app: Celery, task_id: str | None) -> bool:
    if not task_id:
        return False
    try:
        meta = app.backend.get_task_meta(task_id + WITHDRAWN_SUFFIX)
    except Exception as exc:  # the broadcast revoke still reaches the live workers
        log.warning("could not check whether %s was withdrawn: %s", task_id, redact(str(exc)))
        return False
    return bool(meta.get("status") == WITHDRAWN_STATE)


def _withdrawn_outcome(spec: Any) -> dict[str, Any]:
    import socket
    import time

    now = time.time()
    return {
        "key": spec["key"], "state": "failed", "kind": "killed",
        "reason": "killed: withdrawn before it started", "exit_code": None,
        "hostname": socket.gethostname(), "worker": None, "pid": os.getpid(),
        "started_at": now, "ended_at": now, "log_path": "", "log": "", "log_kept": False,
    }  # fmt: skip


@inspect_command(args=[("relpath", str)], signature="<relpath>")  # type: ignore[untyped-decorator]
def airdask_live_log(state: Any, relpath: str) -> dict[str, Any]:
    """The log so far of the attempt whose log is ``relpath``, if it runs on this worker."""
    root = os.path.realpath(worker_log_dir())
    path = os.path.realpath(os.path.join(root, relpath))
    if not path.startswith(root + os.sep) or not os.path.exists(path):
        return {"log": None}
    return {"log": log_text(path, 16 * 1024 * 1024)}
