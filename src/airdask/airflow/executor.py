"""``airdask.airflow.DaskExecutor``: Airflow 3's executor interface over airdask's Dask backend.

Each Airflow workload becomes one airdask argv command run by airdask's runner on a Dask
worker, in its own process group: ``{python} airdask_execute_workload.py --server URL
--json-path FILE`` (see :mod:`airdask.airflow.worker_script`), where the workload JSON (with
its token) is a private file of the attempt (mode 0600, removed after), never an argument.

Keys. airdask's keys derive from the task instance key, but Airflow queues a deferred task
again with the same key and try, so the adapter hands airdask a key whose run_id carries a
per-submission nonce: ``run_id~<nonce>``. The nonce is the ``external_executor_id`` that
Airflow 3.2+ writes in the same commit as QUEUED (``pre_assigns_external_executor_id``), so
it is in the database before anything reaches Dask. Once airdask accepted the attempt, the
external id Airflow stores is ``<nonce>|<airdask's external id>``: everything adoption needs
to find the attempt again after the scheduler process died.

Events. QUEUED and RUNNING carry that external id (a RUNNING event without one would clear it
in the database); SUCCESS and FAILED are reported only when the workload's process has ended;
a lost Dask connection or a start the API server refused because the task already runs
elsewhere (409) are not task ends: nothing is reported and the task stays held until Airflow's
own checks settle it (:mod:`airdask.airflow.outcomes`).
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow import __version__ as AIRFLOW_VERSION
from airflow.executors import workloads
from airflow.executors.base_executor import PARALLELISM, BaseExecutor, get_execution_api_server_url
from airflow.models.taskinstancekey import TaskInstanceKey
from airflow.utils.state import TaskInstanceState

from airdask.airflow import outcomes
from airdask.airflow.settings import Settings
from airdask.commands import ArgvWithFiles
from airdask.state import TaskInstanceKey as AirdaskKey

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

_VERSION = tuple(int(part) for part in re.findall(r"\d+", AIRFLOW_VERSION)[:2])
if _VERSION < (3, 3):
    raise ImportError(
        f"airdask.airflow.DaskExecutor needs Apache Airflow 3.3 or later, found {AIRFLOW_VERSION}"
    )

SCRIPT_NAME = "airdask_execute_workload.py"
WORKLOAD_NAME = "workload.json"
#: Seconds between reconnection attempts while the Dask scheduler cannot be reached.
RECONNECT_SECONDS = 5.0
#: Seconds between database checks of tasks held without an outcome.
HELD_CHECK_SECONDS = 10.0
#: Seconds between reads of the cluster's thread count (see DaskExecutor.slots_available).
THREADS_CHECK_SECONDS = 5.0
#: Task instance states in which a held task may still be running (or about to).
LIVE_STATES = frozenset({"queued", "running", "restarting", "scheduled"})


@dataclass
class _BackendTI:
    """What airdask's backend reads of a task instance (its own model has these fields)."""

    key: AirdaskKey
    pool: str | None = None
    pool_slots: int = 1
    executor_config: Any = None
    external_executor_id: str | None = None
    state: str | None = None  # unknown: the backend's get_task_log reads the file


@dataclass
class _Submission:
    """One workload handed to airdask; ``held_since`` is set while it has no outcome."""

    key: Any  # Airflow's TaskInstanceKey (or CallbackKey)
    nonce: str
    pool: str | None
    pool_slots: int
    external_id: str | None = None
    held_since: float | None = None


def _script_source() -> str:
    from airdask.airflow import worker_script

    return Path(worker_script.__file__).read_text(encoding="utf-8")


def fold(key: Any, nonce: str) -> AirdaskKey:
    """airdask's key for one submission of Airflow's task instance ``key``."""
    return AirdaskKey(
        key.dag_id, key.task_id, f"{key.run_id}~{nonce}", key.try_number, key.map_index
    )


class DaskExecutor(BaseExecutor):  # type: ignore[misc]
    """Runs Airflow 3 tasks on a Dask cluster through airdask (see the module docstring)."""

    is_local = False
    is_production = True
    serve_logs = False
    supports_ad_hoc_ti_run = False
    # Deadline callbacks go to the default executor; on 3.3 the worker entry point runs
    # them like tasks (without the flag, queueing one would raise in the scheduler loop).
    supports_callbacks = True
    supports_multi_team = False
    supports_connection_test = False
    sentry_integration = ""
    pre_assigns_external_executor_id = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        team_name = kwargs.get("team_name")
        from airflow.executors.base_executor import ExecutorConf

        self.settings = Settings.read(ExecutorConf(team_name))
        if not args and "parallelism" not in kwargs:
            kwargs["parallelism"] = self.settings.parallelism or PARALLELISM
        super().__init__(*args, **kwargs)
        self.server = get_execution_api_server_url(self.conf)
        self._backend: Any | None = None
        self._connect_error: str | None = None
        self._next_connect = 0.0
        self._subs: dict[AirdaskKey, _Submission] = {}
        self._by_ti: dict[Any, AirdaskKey] = {}
        self._next_held_check = 0.0
        self._started: set[Any] = set()  # keys whose workload started on a worker
        self._threads = 0  # the cluster's worker threads, 0 while unknown
        self._next_threads_check = 0.0
        self._pools: dict[Any, str | None] = {}
        self._script = _script_source()
        self._live_logs: Any | None = None

    # ---- connection --------------------------------------------------------------------

    def start(self) -> None:
        """Connect to the Dask cluster. An unreachable cluster is logged, not raised: the
        scheduler keeps running, tasks fail with the reason, and reconnection is retried."""
        self._connect()

    def _connect(self) -> bool:
        if self._backend is not None:
            return True
        now = time.monotonic()
        if now < self._next_connect:
            return False
        self._next_connect = now + RECONNECT_SECONDS
        try:
            self._backend = self._build_backend()
        except Exception as exc:
            self._connect_error = (
                f"cannot reach the Dask scheduler at {self.settings.cluster_address} "
                f"({type(exc).__name__}: {exc}); check [dask] cluster_address and that the "
                "Dask scheduler is running"
            )
            log.error("%s", self._connect_error)
            return False
        self._connect_error = None
        return True

    def _build_backend(self) -> Any:
        import dask
        from airflow.configuration import conf

        from airdask.config import load_config
        from airdask.executors.dask import DaskExecutor as Backend

        log_folder = Path(conf.get("logging", "base_log_folder")) / "airdask"
        home = Path(tempfile.gettempdir()) / "airdask-airflow"
        config = load_config({"AIRDASK_HOME": str(home)}, path=home / "none.cfg").with_overrides(
            {
                ("core", "parallelism"): 0,
                ("logging", "base_log_folder"): str(log_folder),
                ("dask", "cluster_address"): self.settings.cluster_address,
                ("dask", "tls_ca"): self.settings.tls_ca,
                ("dask", "tls_cert"): self.settings.tls_cert,
                ("dask", "tls_key"): self.settings.tls_key,
                ("dask", "pool_resources"): self.settings.pool_resources,
                ("dask", "log_max_bytes"): self.settings.log_max_bytes,
            }
        )
        backend = Backend(
            self.settings.cluster_address,
            config=config,
            parallelism=0,
            reuse_current_client=False,
            # Adoption needs airdask's id in Airflow's database from the start (see Keys).
            queued_report_seconds=0,
        )
        timeout = f"{self.settings.connect_timeout}s"
        with dask.config.set({"distributed.comm.timeouts.connect": timeout}):
            backend.start()
        if self.settings.forkserver:
            from airdask.airflow.forkserver import install

            try:
                install(
                    backend.client,
                    self._script,
                    python=self.settings.worker_python,
                    preload=self.settings.forkserver_preload,
                )
            except Exception as exc:  # tasks still run, each in a fresh interpreter
                log.warning("could not start fork servers on the Dask workers: %s", exc)
        return backend

    # ---- queueing and submitting -------------------------------------------------------

    def queue_workload(self, workload: Any, session: Session) -> None:
        """Store an ExecuteTask with its pool, which the workload does not carry."""
        if not isinstance(workload, workloads.ExecuteTask):
            super().queue_workload(workload, session)
            return
        from airflow.models.taskinstance import TaskInstance
        from sqlalchemy import select

        pool = session.scalar(select(TaskInstance.pool).where(TaskInstance.id == workload.ti.id))
        self.queued_tasks[workload.ti.key] = workload
        self._pools[workload.ti.key] = pool

    def _process_workloads(self, workload_items: Sequence[Any]) -> None:
        """Hand workloads to airdask; they reach Dask on this heartbeat's ``sync``. A
        workload that cannot be handed over fails with the reason, alone."""
        connected = self._connect()
        for workload in workload_items:
            key = workload.key
            self.queued_tasks.pop(key, None)
            self.queued_callbacks.pop(key, None)
            pool = self._pools.pop(key, None)
            self.running.add(key)
            if not connected:
                self.fail(key, self._connect_error or "not connected to the Dask scheduler")
                continue
            try:
                self._submit(workload, pool)
            except Exception as exc:
                log.warning("could not hand %s to Dask: %s", key, exc, exc_info=True)
                self._forget(key)
                self.fail(key, f"airdask could not submit the task: {type(exc).__name__}: {exc}")

    def _submit(self, workload: Any, pool: str | None) -> None:
        assert self._backend is not None
        ti = getattr(workload, "ti", None)
        if ti is not None:
            nonce = str(ti.external_executor_id or uuid.uuid4()).replace("-", "")
            folded = fold(ti.key, nonce)
            priority, queue, slots = int(ti.priority_weight or 1), ti.queue, int(ti.pool_slots or 1)
        else:  # a callback: no task instance, no pool
            nonce = uuid.uuid4().hex
            folded = AirdaskKey("callback", str(workload.callback.id), nonce)
            priority, queue, slots = 1, None, 1
        python = self.settings.worker_python or "{python}"
        argv = [python, f"{{files}}/{SCRIPT_NAME}", "--server", self.server,
                "--json-path", f"{{files}}/{WORKLOAD_NAME}"]  # fmt: skip
        if not self.settings.forkserver:  # not even one another executor started
            argv.append("--no-forkserver")
        command = ArgvWithFiles(
            argv, files={SCRIPT_NAME: self._script, WORKLOAD_NAME: workload.model_dump_json()}
        )
        sub = _Submission(workload.key, nonce, pool, slots)
        self._register(folded, sub)
        self._backend.queue_command(
            _BackendTI(folded, pool=pool, pool_slots=slots), command, priority=priority, queue=queue
        )

    def _register(self, folded: AirdaskKey, sub: _Submission) -> None:
        old = self._by_ti.get(sub.key)
        if old is not None:
            self._subs.pop(old, None)
        self._subs[folded] = sub
        self._by_ti[sub.key] = folded

    def _forget(self, key: Any) -> _Submission | None:
        self._started.discard(key)
        folded = self._by_ti.pop(key, None)
        return None if folded is None else self._subs.pop(folded, None)

    # ---- events ------------------------------------------------------------------------

    def sync(self) -> None:
        """Submit what was handed over and translate airdask's events. Never raises: the
        scheduler calls it without a guard."""
        try:
            if not self._connect():
                return
            assert self._backend is not None
            self._backend.heartbeat()
            for folded, (state, info) in self._backend.get_event_buffer().items():
                self._translate(folded, state, info)
            self._check_held()
            self._started &= self.running  # Airflow may have settled some itself
            self._count_threads()
        except Exception:
            log.exception("DaskExecutor.sync failed; it is tried again on the next heartbeat")

    # ---- capacity ----------------------------------------------------------------------
    #
    # Airflow's parallelism bounds the tasks that run at once. A task handed to Dask but not
    # started waits on the Dask scheduler; while the cluster has no more threads than
    # parallelism it cannot run more than parallelism at once whatever it holds, so up to
    # parallelism such tasks are not counted: when a thread frees up, Dask starts the next
    # at once, instead of after the task's event went through Airflow's scheduler loop and
    # the next task came back (LocalExecutor's workers likewise take their next task from a
    # queue of their own). With more threads than parallelism, or before the thread count
    # is known, every handed-over task counts.

    def _count_threads(self) -> None:
        now = time.monotonic()
        if now < self._next_threads_check or self._backend is None:
            return
        self._next_threads_check = now + THREADS_CHECK_SECONDS
        try:
            self._threads = sum(self._backend.client.nthreads().values())
        except Exception as exc:  # keep the last count; a lost connection shows elsewhere
            log.debug("could not count the cluster's threads: %s", exc)

    def _counted(self) -> int:
        """Handed-over tasks that count against parallelism (see above)."""
        started = len(self._started & self.running)
        waiting = len(self.running) - started
        spare = self.parallelism if 0 < self._threads <= self.parallelism else 0
        return started + max(0, waiting - spare)

    def _queued(self) -> int:
        return sum(
            len(getattr(self, name, ()))
            for name in ("queued_tasks", "queued_callbacks", "queued_connection_tests")
        )

    @property
    def slots_available(self) -> int:
        return int(self.parallelism - self._counted() - self._queued())

    @property
    def slots_occupied(self) -> int:
        return self._counted() + self._queued()

    def trigger_tasks(self, open_slots: int) -> None:
        """Airflow's, with the open slots counted as above (the base counts every task
        handed over)."""
        super().trigger_tasks(self.parallelism - self._counted())

    def _translate(self, folded: AirdaskKey, state: Any, info: Any) -> None:
        sub = self._subs.get(folded)
        if sub is None:
            return
        value = str(getattr(state, "value", state))
        if value == "queued":
            backend_id = getattr(info, "external_executor_id", None)
            sub.external_id = f"{sub.nonce}|{backend_id}" if backend_id else sub.nonce
            if isinstance(sub.key, TaskInstanceKey):  # callbacks have no external id
                # Not self.queued(): Airflow's removes the key from running.
                self.event_buffer[sub.key] = (TaskInstanceState.QUEUED, sub.external_id)
            return
        if value == "running":
            sub.held_since = None
            self._started.add(sub.key)
            self.running_state(sub.key, sub.external_id or sub.nonce)
            return
        logged = self._logged_reason(folded, info) if outcomes.needs_log(info) else None
        verdict = outcomes.verdict(value, info, logged_reason=logged)
        if verdict.action == outcomes.HOLD:
            if sub.held_since is None:
                sub.held_since = time.monotonic()
                log.warning("%s: %s; waiting for Airflow to settle it", sub.key, verdict.reason)
            return
        self._forget(sub.key)
        if verdict.action == outcomes.SUCCESS:
            self.success(sub.key, verdict.reason)
        else:
            log.info("%s failed: %s", sub.key, verdict.reason)
            self.fail(sub.key, verdict.reason)

    def _logged_reason(self, folded: AirdaskKey, info: Any) -> str | None:
        assert self._backend is not None
        try:
            _, lines = self._backend.get_task_log(_BackendTI(folded), folded.try_number)
        except Exception:
            log.debug("no console output for %s", folded, exc_info=True)
            return None
        return outcomes.reason_from_log([str(line) for line in lines])

    def _check_held(self) -> None:
        """Let go of held tasks whose attempt Airflow's database shows as over (their
        process reported its end to the API server, or Airflow moved on): no event, only
        the slot is freed. Held tasks still running are settled by Airflow's heartbeat
        checks, which call ``change_state``."""
        now = time.monotonic()
        if now < self._next_held_check:
            return
        self._next_held_check = now + HELD_CHECK_SECONDS
        held = [
            sub
            for sub in self._subs.values()
            if sub.held_since is not None and isinstance(sub.key, TaskInstanceKey)
        ]
        if not held:
            return
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select, tuple_

        wanted = [(s.key.dag_id, s.key.task_id, s.key.run_id, s.key.map_index) for s in held]
        columns = (TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id,
                   TaskInstance.map_index)  # fmt: skip
        with create_session() as session:
            rows = session.execute(
                select(*columns, TaskInstance.try_number, TaskInstance.state).where(
                    tuple_(*columns).in_(wanted)
                )
            ).all()
        found = {tuple(row[:4]): (row[4], str(row[5] or "none")) for row in rows}
        for sub in held:
            try_number, state = found.get(
                (sub.key.dag_id, sub.key.task_id, sub.key.run_id, sub.key.map_index),
                (None, "none"),
            )
            if try_number == sub.key.try_number and state in LIVE_STATES:
                continue
            log.info("%s is over in Airflow (%s); no longer held", sub.key, state)
            self._forget(sub.key)
            self.running.discard(sub.key)

    def change_state(
        self, key: Any, state: Any, info: Any = None, remove_running: bool = True
    ) -> None:
        """Airflow calls this itself for a task it failed (a missed heartbeat): forget it."""
        if remove_running and key in self._by_ti and str(getattr(state, "value", state)) in (
            "failed", "success"
        ):  # fmt: skip
            sub = self._subs.get(self._by_ti[key])
            if sub is not None and sub.held_since is not None:
                self._forget(key)
        super().change_state(key, state, info, remove_running)

    # ---- the optional methods ----------------------------------------------------------

    def revoke_task(self, *, ti: Any) -> None:
        """Cancel the task in Dask if it waits, kill its process group if it runs; forget
        it. No event, never raises (Airflow's contract)."""
        key = ti.key
        self.queued_tasks.pop(key, None)
        self._pools.pop(key, None)
        folded = self._by_ti.get(key)
        self._forget(key)
        self.running.discard(key)
        if folded is None or self._backend is None:
            return
        try:
            self._backend.revoke_task(ti=_BackendTI(folded))
        except Exception:
            log.exception("could not revoke %s in Dask", key)

    def try_adopt_task_instances(self, tis: Sequence[Any]) -> Sequence[Any]:
        """Re-attach to the Dask attempts of a scheduler that died; return the rest."""
        if not tis:
            return tis
        if not self._connect():
            return tis
        assert self._backend is not None
        rest: list[Any] = []
        candidates: dict[AirdaskKey, tuple[Any, _BackendTI]] = {}
        for ti in tis:
            nonce, sep, backend_id = str(ti.external_executor_id or "").partition("|")
            if not sep or not nonce or not backend_id:
                rest.append(ti)
                continue
            folded = fold(ti.key, nonce)
            candidates[folded] = (ti, _BackendTI(folded, external_executor_id=backend_id))
        if not candidates:
            return rest
        try:
            left = self._backend.try_adopt_task_instances([p for _, p in candidates.values()])
        except Exception:
            log.exception("could not adopt task instances from Dask")
            return list(tis)
        not_adopted = {p.key for p in left}
        for folded, (ti, proxy) in candidates.items():
            if folded in not_adopted:
                rest.append(ti)
                continue
            sub = _Submission(ti.key, folded.run_id.rsplit("~", 1)[1], None, 1)
            sub.external_id = str(ti.external_executor_id)
            self._register(folded, sub)
            self.running.add(ti.key)
            log.info("adopted %s from Dask (%s)", ti.key, proxy.external_executor_id)
        return rest

    def get_task_log(self, ti: Any, try_number: int) -> tuple[list[str], list[str]]:
        """The log of a running task, read from the Dask worker that runs it (see
        :mod:`airdask.airflow.live_logs`); ``([], [])`` when there is none or the cluster
        cannot be asked. Airflow calls this in the API server, on an executor it never
        started, and only while the task runs: the first call connects (within
        ``[dask] connect_timeout``, at most 5 s) and the client is kept."""
        try:
            from airflow.configuration import conf
            from airflow.utils.helpers import log_filename_template_renderer

            relative = log_filename_template_renderer()(ti=ti, try_number=try_number)
            path = str(Path(conf.get("logging", "base_log_folder")) / relative)
            if self._live_logs is None:
                from airdask.airflow.live_logs import LiveLogReader

                self._live_logs = LiveLogReader(
                    self.settings.cluster_address,
                    security=self._security(),
                    connect_timeout=self.settings.connect_timeout,
                )
            return self._live_logs.read(path)
        except Exception:
            log.exception("could not read the live log of %s", getattr(ti, "key", ti))
            return [], []

    def _security(self) -> Any:
        given = (self.settings.tls_ca, self.settings.tls_cert, self.settings.tls_key)
        if not any(given):
            return None
        from distributed import Security

        ca, cert, key = given
        return Security(  # type: ignore[no-untyped-call]
            tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True
        )

    def end(self) -> None:
        """Wait for the tasks in flight, report them, and disconnect (as LocalExecutor
        does; a scheduler that is killed instead leaves them to be adopted)."""
        self._stop("end")

    def terminate(self) -> None:
        """Kill every task in flight (their process groups), report them, disconnect."""
        self._stop("terminate")

    def _stop(self, how: str) -> None:
        if self._live_logs is not None:
            self._live_logs.close()
            self._live_logs = None
        if self._backend is None:
            return
        try:
            getattr(self._backend, how)()
            for folded, (state, info) in self._backend.get_event_buffer().items():
                self._translate(folded, state, info)
        except Exception:
            log.exception("DaskExecutor.%s failed", how)
        finally:
            self._backend = None

    @staticmethod
    def get_cli_commands() -> list[Any]:
        from airdask.airflow.cli import get_cli_commands

        return get_cli_commands()
