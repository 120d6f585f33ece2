"""CeleryExecutor: the BaseExecutor contract on Celery 5 workers (``airdask celery worker``).

One Celery task (``airdask.run_attempt``) per attempt, its message JSON (ADR 0007), its id a
fresh uuid: the ``external_executor_id``. A task's ``queue`` is its Celery queue (the
scheduler's ``default`` is ``[celery] default_queue``).

States (``sync``)
    Every attempt in flight is read in one round trip per sync (:mod:`.states`): a Redis
    ``MGET`` of their result keys, or one SQL query on the database backend. ``STARTED``
    (``task_track_started``) is reported as running, with the worker's host; ``SUCCESS``
    carries the runner's outcome (success or the command's failure, with its log, written
    to ``[logging] base_log_folder``); ``FAILURE`` is a task the worker refused or could
    not run. Results reported by one sync are deleted from the backend by the next (the
    scheduler recorded them by then), in the same round trip.

Outages
    A failed state read marks the backend down: nothing new is sent meanwhile
    (``slots_available`` is 0) and nothing is reported, for up to ``[celery] lost_after``
    seconds; then the attempts in flight are reported ``connection_lost`` (outcome unknown,
    retried per their ``retries``) and revoked once the backend answers again. A publish
    that fails for want of a broker leaves the attempt (and the rest of the batch) queued.

Withdrawing (``revoke_task``, ``cleanup_stuck_queued_tasks``, ``terminate``)
    Celery's ``revoke(terminate=True)`` (the pool process running it is killed, and with it
    the command's process group), plus a mark in the result backend that a worker checks
    before it starts an attempt: a worker that was not up to hear the broadcast still skips
    it.

Adoption
    ``try_adopt_task_instances`` tracks each TI by its external id again (no second run);
    its state comes with the next sync.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from kombu.exceptions import OperationalError

from airdask.commands import build_spec
from airdask.executors.base import BaseExecutor, ClusterUnreachableError, TaskTuple
from airdask.executors.celery.app import (
    TASK_NAME,
    WITHDRAWN_STATE,
    WITHDRAWN_SUFFIX,
    make_app,
)
from airdask.executors.celery.messages import to_message
from airdask.executors.celery.settings import celery_settings
from airdask.executors.celery.states import BulkStateFetcher, quiet_redis_backends
from airdask.executors.common import execution_timeout
from airdask.executors.dask.task_logs import LogWriter
from airdask.executors.events import EventInfo, info_from_outcome
from airdask.logs import log_relpath, read_log
from airdask.masking import display_value, redact
from airdask.state import TaskInstanceKey

if TYPE_CHECKING:
    from collections.abc import Sequence

    import click
    from celery import Celery

    from airdask.commands import Command
    from airdask.config import Config
    from airdask.store.models import TaskInstance

log = logging.getLogger(__name__)

#: What a failed publish or connection raises: the broker is unreachable.
BROKER_ERRORS: tuple[type[BaseException], ...] = (OperationalError, ConnectionError, OSError)
#: The id read to learn whether an unreachable result backend answers again.
PROBE_ID = "airdask-probe"
#: After a publish failed for want of a broker, how long nothing is published.
PUBLISH_PAUSE_SECONDS = 1.0
#: How often end() reads the states while it waits.
END_POLL_SECONDS = 0.1


class CeleryConnectionError(ClusterUnreachableError):
    """The broker or the result backend cannot be reached (the message says which)."""


def masked(url: str) -> str:
    return display_value(url, sensitive=True)


class CeleryExecutor(BaseExecutor):
    """Runs attempts on Celery workers through ``[celery] broker_url``.

    :param app: a Celery app to use instead of one built from ``[celery]`` (it must register
        ``airdask.run_attempt`` on the workers, as ``airdask celery worker`` does).
    """

    is_local = False

    def __init__(
        self,
        parallelism: int | None = None,
        *,
        config: Config | None = None,
        app: Celery | None = None,
    ) -> None:
        super().__init__(parallelism, config=config)
        self.settings = celery_settings(self.config)
        self._given_app = app
        self._app: Celery | None = None
        self._fetcher: BulkStateFetcher | None = None
        self._tasks: dict[str, TaskInstanceKey] = {}  # celery id -> attempt in flight
        self._ids: dict[TaskInstanceKey, str] = {}
        self._hosts: dict[str, str] = {}  # celery id -> worker hostname, once started
        self._queue_of: dict[str, str] = {}  # celery id -> celery queue
        self._unacked: list[str] = []  # reported by the last sync, forgotten by the next
        self._lost: list[str] = []  # reported lost while down: revoked when back
        self._down_since: float | None = None  # the result backend's outage
        self._broker_down = False
        self._publish_paused_until = 0.0
        self._logs = LogWriter(self.settings.base_log_folder)
        #: Seconds spent in state reads, and how many (the benchmark prints them).
        self.sync_seconds = 0.0
        self.sync_count = 0

    # ---- connection --------------------------------------------------------------------

    @property
    def app(self) -> Celery:
        if self._app is None:
            raise RuntimeError("CeleryExecutor is not started: call start() first")
        return self._app

    def start(self) -> None:
        """Build the app and check that the broker and the result backend answer, within
        ``[celery] operation_timeout``; :class:`CeleryConnectionError` (one line) if not."""
        if self._app is not None:
            return
        app = self._given_app or make_app(self.settings)
        quiet_redis_backends(app)
        check_broker(app, self.settings.celery.broker_url)
        self._fetcher = BulkStateFetcher(app, self.settings.backend_kind)
        try:
            self._fetcher.fetch([str(uuid.uuid4())])
        except Exception as exc:
            raise CeleryConnectionError(
                f"cannot reach the Celery result backend at "
                f"{masked(self.settings.result_backend)}: {redact(str(exc))}"
            ) from None
        self._fetcher.round_trips = 0
        self._app = app
        log.info(
            "CeleryExecutor on broker %s, result backend %s",
            masked(self.settings.celery.broker_url),
            masked(self.settings.result_backend),
        )

    @property
    def slots_available(self) -> int:
        """0 while the result backend is unreachable: nothing new is sent meanwhile."""
        if self._down_since is not None:
            return 0
        return super().slots_available

    # ---- submitting --------------------------------------------------------------------

    def _process_tasks(self, task_tuples: list[TaskTuple]) -> None:
        """Publish on one producer (one connection) per batch. An attempt whose publish
        fails for want of a broker goes back to ``queued_tasks`` with the rest of the batch:
        an outage is not its fault, and must not cost it a try."""
        self._ensure_started()
        if self._down_since is not None or time.monotonic() < self._publish_paused_until:
            return  # the backend is out (sync probes it), or the broker was a moment ago
        with self.app.producer_or_acquire() as producer:
            for index, (key, command, queue, executor_config) in enumerate(task_tuples):
                entry = self.queued_tasks.pop(key)
                self.running.add(key)
                try:
                    self._send(key, command, queue, executor_config, producer)
                except BROKER_ERRORS as exc:
                    self.running.discard(key)
                    self.queued_tasks[key] = entry
                    self._publish_paused_until = time.monotonic() + PUBLISH_PAUSE_SECONDS
                    if not self._broker_down:
                        self._broker_down = True
                        log.warning(
                            "Celery broker unreachable (%s): %d attempt(s) stay queued; "
                            "trying again every %gs",
                            redact(str(exc)),
                            len(task_tuples) - index,
                            PUBLISH_PAUSE_SECONDS,
                        )
                    return
                except Exception as exc:  # this attempt alone fails
                    log.warning("could not start %s: %s", key, redact(str(exc)))
                    self.fail(key, self._submit_error_info(exc))
                    continue
                if self._broker_down:
                    self._broker_down = False
                    log.warning("Celery broker reachable again")

    def execute_async(
        self,
        key: TaskInstanceKey,
        command: Command,
        queue: str | None = None,
        executor_config: Any | None = None,
    ) -> None:
        self._ensure_started()
        self._send(key, command, queue, executor_config, None)

    def _send(
        self,
        key: TaskInstanceKey,
        command: Command,
        queue: str | None,
        executor_config: Any,
        producer: Any,
    ) -> None:
        spec = build_spec(
            key,
            command,
            log_root=None,
            return_log=True,
            timeout=execution_timeout(executor_config),
            log_max_bytes=self.settings.celery.log_max_bytes,
        )
        message = to_message(spec, allow_pickle=self.settings.celery.allow_pickle)
        task_id = str(uuid.uuid4())
        celery_queue = self.settings.queue_for(queue)
        self.app.send_task(
            TASK_NAME,
            args=[message],
            task_id=task_id,
            queue=celery_queue,
            producer=producer,
            retry=True,
        )
        self._track(task_id, key, celery_queue)
        self.queued(
            key,
            EventInfo(
                f"sent to Celery queue {celery_queue!r} as task {task_id}",
                kind="queued",
                external_executor_id=task_id,
            ),
        )

    def _track(self, task_id: str, key: TaskInstanceKey, queue: str | None) -> None:
        self._tasks[task_id] = key
        self._ids[key] = task_id
        if queue:
            self._queue_of[task_id] = queue

    def _forget(self, task_id: str) -> TaskInstanceKey | None:
        key = self._tasks.pop(task_id, None)
        if key is not None and self._ids.get(key) == task_id:
            del self._ids[key]
        self._hosts.pop(task_id, None)
        self._queue_of.pop(task_id, None)
        return key

    # ---- harvesting --------------------------------------------------------------------

    def sync(self) -> None:
        """Read every attempt in flight in one round trip and report what changed; forget
        (in the same round trip) the results the previous sync reported."""
        if self._fetcher is None:
            return
        ids = list(self._tasks)
        if not ids and self._down_since is not None:
            ids = [PROBE_ID]  # nothing in flight, but is the backend back?
        if not ids and not self._unacked:
            return
        started = time.perf_counter()
        try:
            states = self._fetcher.fetch(ids, self._unacked)
        except Exception as exc:
            self._backend_down(exc)
            return
        finally:
            self.sync_seconds += time.perf_counter() - started
            self.sync_count += 1
        self._unacked = []
        if self._down_since is not None:
            log.warning("Celery result backend reachable again")
            self._down_since = None
            self._revoke_lost()
        for task_id, (status, result) in states.items():
            self._report(task_id, status, result)

    def _report(self, task_id: str, status: str, result: Any) -> None:
        key = self._tasks.get(task_id)
        if key is None:
            return
        if status == "STARTED":
            if task_id not in self._hosts:
                host = str(result.get("hostname", "")) if isinstance(result, dict) else ""
                self._hosts[task_id] = host
                self.running_state(key, EventInfo(
                    f"started on Celery worker {host}", kind="running",
                    hostname=host.partition("@")[2] or host, worker=host,
                    external_executor_id=task_id))  # fmt: skip
            return
        if status == "SUCCESS" and isinstance(result, dict) and "state" in result:
            info = info_from_outcome(result, external_executor_id=task_id)
            info.worker = self._hosts.get(task_id) or info.worker
            self._logs.submit([(key, str(result.get("log") or ""), None)])
            report = self.success if result["state"] == "success" else self.fail
        elif status == "FAILURE":
            reason = f"{type(result).__name__}: {result}" if isinstance(result, BaseException) \
                else str(result)  # fmt: skip
            info = EventInfo(f"the Celery worker could not run it: {redact(reason)}",
                             kind="error", external_executor_id=task_id)  # fmt: skip
            report = self.fail
        elif status == "REVOKED":
            info = EventInfo("revoked in Celery", kind="killed", external_executor_id=task_id)
            report = self.fail
        elif status in ("SUCCESS",):
            info = EventInfo(f"unexpected result {result!r}", kind="error",
                             external_executor_id=task_id)  # fmt: skip
            report = self.fail
        else:  # RECEIVED, RETRY: not over yet
            return
        self._forget(task_id)
        self._unacked.append(task_id)
        report(key, info)

    def _backend_down(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "Celery result backend %s unreachable (%s): nothing is sent until it answers",
                masked(self.settings.result_backend),
                redact(f"{type(exc).__name__}: {exc}"),
            )
            return
        if now - self._down_since < self.settings.celery.lost_after or not self._tasks:
            return
        reason = (
            f"the Celery result backend was unreachable for more than "
            f"{self.settings.celery.lost_after:g}s: outcome unknown"
        )
        log.error("%s; %d attempt(s) in flight are reported lost", reason, len(self._tasks))
        for task_id in list(self._tasks):
            key = self._forget(task_id)
            assert key is not None
            self._lost.append(task_id)
            self.fail(key, EventInfo(reason, kind="connection_lost", external_executor_id=task_id))
        self._unacked = []

    def _revoke_lost(self) -> None:
        lost, self._lost = self._lost, []
        if lost:
            try:
                self._withdraw(lost)
            except Exception as exc:
                log.warning("could not revoke %d lost attempt(s): %s", len(lost), redact(str(exc)))

    # ---- stopping ----------------------------------------------------------------------

    def end(self) -> None:
        """Wait for every attempt in flight and report it, then release the app. Attempts
        the backend cannot be asked about for ``lost_after`` are reported lost."""
        if self._app is None:
            return
        while self._tasks:
            self.sync()
            if self._tasks:
                time.sleep(END_POLL_SECONDS)
        self.sync()  # forgets the last results
        self._close()

    def terminate(self) -> None:
        """Revoke (terminate) every attempt in flight, report each killed, release."""
        if self._app is None:
            return
        ids = list(self._tasks)
        if ids:
            try:
                self._withdraw(ids)
            except Exception as exc:  # stopping goes on: report them all the same
                log.error("could not revoke %d attempt(s): %s; they may still run",
                          len(ids), redact(str(exc)))  # fmt: skip
        for task_id in ids:
            key = self._forget(task_id)
            if key is not None:
                self.fail(key, EventInfo("terminated", kind="killed",
                                         external_executor_id=task_id))  # fmt: skip
        self._close()

    def _close(self) -> None:
        self._logs.close()
        app, self._app = self._app, None
        self._fetcher = None
        if app is not None and app is not self._given_app:
            app.close()

    def _withdraw(self, task_ids: list[str]) -> None:
        """Mark each withdrawn in the backend, then broadcast ``revoke(terminate=True)``."""
        backend = self.app.backend
        for task_id in task_ids:
            backend.store_result(task_id + WITHDRAWN_SUFFIX, None, WITHDRAWN_STATE)
        self.app.control.revoke(task_ids, terminate=True, signal="SIGTERM")

    # ---- optional methods --------------------------------------------------------------

    def revoke_task(self, *, ti: TaskInstance) -> None:
        """Withdraw the attempt (see the module); no event follows. Raises when the broker
        or the backend cannot be reached: the attempt may still run."""
        key = ti.key
        self.queued_tasks.pop(key, None)
        task_id = self._ids.get(key) or ti.external_executor_id
        if not task_id:
            return
        self._ensure_started()
        self._withdraw([task_id])
        self._forget(task_id)
        self.running.discard(key)

    def cleanup_stuck_queued_tasks(self, tis: list[TaskInstance]) -> list[str]:
        """Revoke each; raises if any could not be withdrawn."""
        lines = []
        for ti in tis:
            task_id = self._ids.get(ti.key) or ti.external_executor_id
            queue = self._queue_of.get(task_id or "") or self.settings.queue_for(ti.queue)
            self.revoke_task(ti=ti)
            lines.append(
                f"{ti.key}: revoked after being stuck in queued (Celery queue {queue!r}: "
                "is a worker consuming it?)"
            )
        return lines

    def try_adopt_task_instances(self, tis: Sequence[TaskInstance]) -> Sequence[TaskInstance]:
        """Track again each TI that has a Celery task id (its external id); return the
        others. Raises when the result backend cannot be asked (nothing must be reset)."""
        self._ensure_started()
        assert self._fetcher is not None
        candidates = [ti for ti in tis if ti.external_executor_id]
        self._fetcher.fetch([str(ti.external_executor_id) for ti in candidates])
        for ti in candidates:
            task_id = str(ti.external_executor_id)
            self._track(task_id, ti.key, None)
            self.running.add(ti.key)
            log.info("adopted %s (Celery task %s)", ti.key, task_id)
        return [ti for ti in tis if not ti.external_executor_id]

    def get_task_log(self, ti: TaskInstance, try_number: int) -> tuple[list[str], list[str]]:
        """The live log while the attempt runs (asked of its worker, or of every worker
        when this executor does not know which), else the file in the log folder."""
        key = ti.key.with_try_number(try_number)
        task_id = self._ids.get(key)
        live_state = ti.state in ("queued", "running") and ti.try_number == try_number
        if self._app is not None and (task_id is not None or live_state):
            host = self._hosts.get(task_id or "")
            try:
                text = live_log(self.app, log_relpath(key), host or None)
            except Exception as exc:
                log.warning("could not ask the Celery workers for a live log: %s", exc)
                text = None
            if text is not None:
                return [f"live log of {key} from its Celery worker"], text.splitlines()
        self._logs.wait(key)
        return read_log(self.settings.base_log_folder, key)

    @staticmethod
    def get_cli_commands() -> list[click.Command]:
        from airdask.executors.celery.cli import celery_group

        return [celery_group]


def check_broker(app: Celery, url: str) -> None:
    """Connect to the broker once, within ``broker_connection_timeout``; raise
    :class:`CeleryConnectionError` (one line, password masked) if it does not answer."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                   timeout=app.conf.broker_connection_timeout)  # fmt: skip
    except Exception as exc:
        raise CeleryConnectionError(
            f"cannot reach the Celery broker at {masked(url)}: {redact(str(exc))}"
        ) from None


def live_log(app: Celery, relpath: str, host: str | None) -> str | None:
    """The log so far of the attempt whose log is ``relpath``, from the worker running it."""
    replies = app.control.broadcast(
        "airdask_live_log",
        arguments={"relpath": relpath},
        reply=True,
        timeout=1.0,
        destination=[host] if host else None,
    )
    for reply in replies or []:
        for answer in reply.values():
            if isinstance(answer, dict) and answer.get("log") is not None:
                return str(answer["log"])
    return None
