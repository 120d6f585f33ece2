"""DaskExecutor: the BaseExecutor contract on a dask.distributed cluster.

One Dask task per attempt, keyed by :func:`airdask.commands.dask_key` (unique per attempt,
grouped as ``dag_id.task_id`` on the dashboard, numbered tails left out), submitted with
``pure=False``, ``retries=0`` and ``priority=priority_weight``. The function that runs on
the worker is :func:`airdask.runner.run_pushed` (``run_task`` returning nothing), shipped by value
(:mod:`airdask.executors.dask.shipping`), so workers need not have airdask.

Outcomes (ADR 0003)
    Nothing wants an attempt once it finished, so Dask never runs a finished attempt again:
    the keeper (:mod:`.keeper`, on the Dask scheduler) hands each submission to Dask's
    ``fire-and-forget`` client, and the outcome arrives as a pushed event. The keeper keeps
    a copy until this executor acknowledges it, at the heartbeat after the one that reported
    it (by then the scheduler has recorded it).

External id and adoption
    ``external_executor_id`` is ``"<dask scheduler id>/<dask key>"``. A new executor adopts
    a dead one's attempts by asking the keeper about their Dask keys (which derive from the
    task instance keys): running ones are tracked, finished ones reported from the kept
    copy. Adoption happens only on the same Dask scheduler (same id). The id reaches the
    database with the attempt's RUNNING or outcome event; a QUEUED event carries it only
    for an attempt that neither started nor finished within ``queued_report_seconds``
    (most do, and the scheduler is spared a write each).

Connection (:mod:`.watch`)
    While the Dask scheduler is unreachable nothing is submitted (``slots_available`` is 0)
    and nothing is reported: a lost connection is not a task's end. Back on the same
    scheduler, the attempts in flight are reconciled with the keeper; on a new (restarted)
    one, the runner and the keeper are installed again and the attempts in flight are
    reported ``connection_lost`` (outcome unknown: their worker killed them when it lost
    its scheduler).

Outcomes (``EventInfo.kind``)
    the runner's kinds (``success``, ``exit_code``, ``exception``, ``timeout``, ...),
    ``worker_died`` (``KilledWorker``), ``killed`` (cancelled by Dask), ``no_worker`` (a
    queue/pool no worker offers), ``error`` (Dask's) and ``connection_lost`` (outcome
    unknown).

Logs
    Each outcome brings the tail of its attempt's log (``[dask] log_max_bytes``; beyond
    16 KiB its worker keeps the rest until the log writer takes it). Logs are appended to
    their run's pack under ``[logging] base_log_folder`` (ADR 0016) on a background thread,
    so a log is there shortly after its event; ``get_task_log`` waits for it, and
    ``end()``/``terminate()`` flush them all.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from dask.base import annotate

from airdask import runner
from airdask.commands import build_spec, dask_key
from airdask.executors.base import BaseExecutor, QueuedTaskInstanceType, TaskTuple
from airdask.executors.common import execution_timeout
from airdask.executors.dask.adoption import (
    KeeperError,
    acknowledge,
    find_adoptable,
    lookup,
    withdraw,
)
from airdask.executors.dask.connect import (
    DaskConnection,
    close_cluster,
    connect,
    security_from_config,
)
from airdask.executors.dask.done import DoneQueue, DoneWatcher
from airdask.executors.dask.harvest import Harvested, from_future
from airdask.executors.dask.keeper import ANNOTATION, QUEUE_ANNOTATION
from airdask.executors.dask.ops import (
    OUR_CANCEL_PREFIX,
    cluster_summary,
    live_log,
    take_kept_logs,
)
from airdask.executors.dask.queued_reports import QueuedReports
from airdask.executors.dask.reporting import Reporter
from airdask.executors.dask.routing import NoWorkerError, ResourceRouter
from airdask.executors.dask.shipping import (
    ShippingError,
    install,
    reference,
    register_runner,
    shipped,
)
from airdask.executors.dask.submit import Pending, chunked_groups
from airdask.executors.dask.task_logs import LogWriter
from airdask.executors.dask.tracking import (
    Tracker,
    confirm_subscribed,
    resubscribe,
    subscribe,
    unsubscribe,
)
from airdask.executors.dask.watch import ConnectionWatch, Link
from airdask.executors.events import EventInfo
from airdask.logs import read_log
from airdask.state import TaskInstanceKey, TaskInstanceState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    import click

    from airdask.commands import Command
    from airdask.config import Config
    from airdask.store.models import TaskInstance

log = logging.getLogger(__name__)

#: While end() waits, this long without an outcome makes it ask the keeper about every
#: attempt in flight (O(in flight), so not on every sync).
END_SWEEP_SECONDS = 10.0
#: The topics an executor follows (attempts started, attempts finished).
TOPICS = [runner.STARTED_TOPIC, runner.FINISHED_TOPIC]
#: Recorded outcomes are acknowledged to the keeper at most this often: one message per
#: interval rather than one per sync() (the keeper holds the copies that much longer).
ACK_INTERVAL = 0.2
#: How long a submitted attempt's QUEUED report waits for its start or outcome, which
#: replace it (see :mod:`.queued_reports`).
QUEUED_REPORT_SECONDS = 2.0


class DaskExecutor(BaseExecutor):
    """Runs attempts on a Dask cluster (attached by address, via a Client, or embedded).

    :param cluster_address: ``tcp://`` or ``tls://`` address; ``None`` reads
        ``[dask] cluster_address``; empty means the current Client, else an embedded cluster.
    :param client: an existing ``distributed.Client`` to reuse (never closed by us).
    :param security: a ``distributed.Security``; ``None`` reads ``[dask] tls_*``.
    :param reuse_current_client: with neither address nor client, use this process's
        current ``distributed.Client`` if there is one (a notebook's) before starting an
        embedded cluster.
    :param resource_ttl: seconds the workers' resources are cached for routing.
    :param worker_resources: what the workers of an embedded cluster offer (``{pool:
        slots}``, see :func:`airdask.store.queries.pool_resources`); the caller reads it
        from the pools table, the executor opens no database.
    :param queued_report_seconds: how long an attempt's QUEUED report (its external id)
        waits for the attempt to start or finish, whose events replace it; 0 reports it at
        submission (see :mod:`.queued_reports`).
    """

    is_local = False

    def __init__(
        self,
        cluster_address: str | None = None,
        *,
        client: Any | None = None,
        security: Any | None = None,
        parallelism: int | None = None,
        reuse_current_client: bool = True,
        resource_ttl: float = 5.0,
        worker_resources: Mapping[str, float] | None = None,
        queued_report_seconds: float = QUEUED_REPORT_SECONDS,
        config: Config | None = None,
    ) -> None:
        super().__init__(parallelism, config=config)
        self.worker_resources = dict(worker_resources or {})
        if cluster_address is None:
            cluster_address = self.config.dask.cluster_address or None
        self.cluster_address = cluster_address
        self.security = security if security is not None else security_from_config(self.config)
        self.reuse_current_client = reuse_current_client
        self.resource_ttl = resource_ttl
        self.pool_policy = self.config.dask.pool_resources
        self.log_max_bytes = self.config.dask.log_max_bytes
        # the keeper's marks on each graph: whose it is, and whether it waits in Dask's queue
        self._marks: dict[str, Any] = (
            {QUEUE_ANNOTATION: True} if self.config.dask.dispatch == "queue" else {}
        )
        self.base_log_folder = self.config.logging.base_log_folder
        self._given_client = client
        self._conn: DaskConnection | None = None
        self._watch: ConnectionWatch | None = None
        self._router: ResourceRouter | None = None
        self._done = DoneQueue()
        self._watcher = DoneWatcher(self._done)
        self._track = Tracker()
        self._logs = LogWriter(self.base_log_folder, fetch=self._fetch_kept_logs)
        #: the queued entries of the batch being handed to execute_async (_before_process)
        self._handing: Mapping[TaskInstanceKey, QueuedTaskInstanceType] = {}
        self._pending: list[Pending] | None = None
        #: outcomes reported by the previous sync (recorded by the caller since)
        self._unacked: list[str] = []
        #: recorded outcomes not yet acknowledged to the keeper, and when it was last told
        self._recorded: list[str] = []
        self._acked_at = 0.0
        #: attempts in flight when the link came back that the keeper could not be asked about
        self._unreconciled: list[str] = []
        self._reporter = Reporter(
            self._track,
            self._logs,
            success=self.success,
            fail=self.fail,
            running=self.running_state,
            external_id=self._external_id,
        )
        self.scheduler_id: str | None = None
        self._queued_reports = QueuedReports(queued_report_seconds)

    # ---- connection --------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._conn is None:
            raise RuntimeError("DaskExecutor is not started: call start() first")
        return self._conn.client

    @property
    def dashboard_link(self) -> str | None:
        """The Dask dashboard's URL (None before ``start()`` or without a dashboard)."""
        if self._conn is None:
            return None
        try:
            return str(self._conn.client.dashboard_link)
        except Exception:
            return None

    def _html_fields(self) -> dict[str, Any]:
        """Adds the Dask scheduler's address, its workers and the resources they offer in
        all (one scheduler query: a notebook display, not a hot path)."""
        fields = super()._html_fields()
        if self._connected():
            fields.update(cluster_summary(self.client))
        return fields

    def start(self) -> None:
        if self._conn is not None:
            return
        register_runner()
        self._heavy_run_task = shipped(runner.run_pushed)
        self._run_task: Callable[..., Any] = self._heavy_run_task
        self._read_live_log = shipped(runner.read_live_log)
        self._take_kept_logs = shipped(runner.take_kept_logs)
        self._conn = connect(
            self.config,
            address=self.cluster_address,
            client=self._given_client,
            security=self.security,
            reuse_current_client=self.reuse_current_client,
            worker_resources=self.worker_resources,
        )
        try:
            self._install_runner()
            self._watch = ConnectionWatch(
                self._conn, reconnect=self._reconnector(), dead=self._embedded_scheduler_died
            )
        except BaseException:
            self._close()
            raise
        client = self._conn.client
        self.scheduler_id = self._watch.scheduler_id
        self._router = ResourceRouter(client, policy=self.pool_policy, ttl=self.resource_ttl)
        subscribe(client, runner.STARTED_TOPIC, self._track.on_started)
        subscribe(client, runner.FINISHED_TOPIC, self._on_finished)
        confirm_subscribed(client, TOPICS, timeout=self.config.dask.connect_timeout)
        log.info(
            "DaskExecutor on %s (dashboard: %s)",
            client.scheduler.address,
            self.dashboard_link or "none",
        )

    def _on_finished(self, event: Any) -> None:
        """On Dask's event loop: an outcome arrived; it may wake a waiting scheduler."""
        self._track.on_finished(event)
        self.arrivals.add()

    def _reconnector(self) -> Callable[[], Any] | None:
        """How to replace a client that closed: one this executor made for an address, or
        for an embedded cluster whose Dask scheduler runs in a process of its own (a whole
        new cluster then: see :meth:`_restart_embedded`). A passed-in client, and an
        in-process cluster's, are not ours to replace."""
        conn = self._conn
        if conn is None or not conn.owns_client:
            return None
        if conn.cluster is not None:
            from airdask.executors.dask.embedded import scheduler_process_of

            separate = scheduler_process_of(conn.cluster) is not None
            return self._restart_embedded if separate else None
        address = self.cluster_address

        def reconnect() -> Any:
            return connect(self.config, address=address, client=None, security=self.security,
                           reuse_current_client=False).client  # fmt: skip

        return reconnect if address else None

    def _embedded_scheduler_died(self) -> bool:
        if self._conn is None or self._conn.cluster is None:
            return False
        from airdask.executors.dask.embedded import scheduler_process_of

        process = scheduler_process_of(self._conn.cluster)
        return process is not None and process.exit_code is not None

    def _restart_embedded(self) -> Any:
        """A new embedded cluster in place of one whose Dask scheduler process died (the OOM
        killer's pick, say), and its client; the attempts in flight died with it and are
        reported so once the new client is in (Link.NEW). The old cluster closes on a
        thread of its own: its close may wait out a connect timeout on the dead address."""
        assert self._conn is not None
        old = self._conn.cluster
        new = connect(
            self.config,
            address=None,
            client=None,
            security=None,
            reuse_current_client=False,
            worker_resources=self.worker_resources,
        )
        self._conn.cluster = new.cluster
        log.warning("started a new embedded Dask cluster (dashboard: %s)",
                    new.client.dashboard_link)  # fmt: skip
        threading.Thread(
            target=close_cluster, args=(old,), name="airdask-close-dead-cluster", daemon=True
        ).start()
        return new.client

    def _install_runner(self) -> None:
        """Put the runner and the keeper on the cluster (see ``shipping``)."""
        install(self.client, [self._heavy_run_task, self._read_live_log, self._take_kept_logs])
        self._run_task = reference(self._heavy_run_task)

    def _external_id(self, key: str) -> str:
        return f"{self.scheduler_id}/{key}"

    def _connected(self) -> bool:
        return self._conn is not None and self._conn.client.status == "running"

    def _follow_connection(self) -> bool:
        """Whether the cluster can be used now; handles a reconnect (see the module)."""
        if self._watch is None:
            return False
        link = self._watch.check()
        if link is Link.UP:
            if self._unreconciled:
                self._reconcile_after_outage()
            return True
        if link is Link.DOWN:
            return False
        client = self.client
        for topic, handler in ((runner.STARTED_TOPIC, self._track.on_started),
                               (runner.FINISHED_TOPIC, self._on_finished)):  # fmt: skip
            subscribe(client, topic, handler)  # a replaced client subscribes anew
        resubscribe(client)
        self._router = ResourceRouter(client, policy=self.pool_policy, ttl=self.resource_ttl)
        if link is Link.NEW:
            self._unacked, self._recorded = [], []  # that keeper is gone
            try:
                self._install_runner()
            except Exception as exc:  # the next check tries again
                log.error("could not install airdask on the new Dask scheduler: %s", exc)
                # Still down, and still on the old scheduler's id: the next check that finds
                # the client connected says NEW again, not BACK (the same one come back),
                # which would skip the install and never report the attempts lost with it.
                self._watch.down_since = time.monotonic()
                if self.scheduler_id is not None:
                    self._watch.scheduler_id = self.scheduler_id
                return False
            self._reporter.lose(self._track.names(), "the Dask scheduler was restarted")
            self._unreconciled = []
            self.scheduler_id = self._watch.scheduler_id
        else:  # outcomes pushed before the subscriptions were renewed are in the keeper
            confirm_subscribed(client, TOPICS, timeout=self.config.dask.connect_timeout)
            self._unreconciled = self._track.names()
            self._reconcile_after_outage()
        return True

    def _reconcile_after_outage(self) -> None:
        """Ask the keeper about the attempts in flight when the link came back (an outcome
        pushed meanwhile never arrived), at each sync until it answers: nothing else asks
        about them (END_SWEEP_SECONDS is for end()). Only those: a newer attempt may not
        have reached the scheduler yet, and would be taken for lost."""
        names = [name for name in self._unreconciled if self._track.ti_key(name) is not None]
        if self._reconcile(names, "lost while the connection was down"):
            self._unreconciled = []

    @property
    def slots_available(self) -> int:
        """0 while the Dask scheduler is unreachable: nothing new is queued meanwhile."""
        if self._watch is not None and self._watch.down_since is not None:
            return 0
        return super().slots_available

    # ---- submitting --------------------------------------------------------------------

    def _before_process(self, entries: Mapping[TaskInstanceKey, QueuedTaskInstanceType]) -> None:
        """Keep the entries of the batch about to reach ``execute_async``, which needs their
        priority and pool. The next batch replaces them and :meth:`batch` drops them, so
        nothing accumulates; an attempt handed over without them (a direct ``execute_async``
        call) gets priority 1 and no pool."""
        self._handing = entries

    def _process_tasks(self, task_tuples: list[TaskTuple]) -> None:
        """Hands nothing to Dask while it is unreachable: the attempts stay queued (an
        outage is not their fault, and must not cost them a try)."""
        self._ensure_started()
        if not self._follow_connection():
            return
        with self.batch():
            super()._process_tasks(task_tuples)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Submit the attempts that ``execute_async`` gets inside the block together.

        One ``client.map`` per (priority, resources) group: the runner, shipped by value, is
        serialised once per group instead of once per attempt, and the scheduler gets one
        message. Outside a block each attempt is submitted at once.
        """
        if self._pending is not None:
            yield
            return
        self._pending = []
        try:
            yield
        finally:
            pending, self._pending = self._pending, None
            self._handing = {}
            self._submit(pending)

    def execute_async(
        self,
        key: TaskInstanceKey,
        command: Command,
        queue: str | None = None,
        executor_config: Any | None = None,
    ) -> None:
        self._ensure_started()
        assert self._router is not None
        entry = self._handing.get(key)
        priority, pool, pool_slots = (
            (1, None, 1) if entry is None else (entry[1], entry[3].pool, entry[3].pool_slots)
        )
        spec = build_spec(
            key,
            command,
            log_root=None,
            return_log=True,
            timeout=execution_timeout(executor_config),
            log_max_bytes=self.log_max_bytes,
        )
        try:
            resources = self._router.resources_for(queue=queue, pool=pool, pool_slots=pool_slots)
        except NoWorkerError as exc:
            log.warning("cannot run %s: %s", key, exc)
            self.fail(key, EventInfo(str(exc), kind="no_worker"))
            return
        item = Pending(key, spec, priority, resources)
        if self._pending is None:
            self._submit([item])
        else:
            self._pending.append(item)

    def _submit(self, pending: list[Pending]) -> None:
        submitted: list[tuple[str, Any]] = []
        for priority, resources, items in chunked_groups(pending):
            try:
                with annotate(**{ANNOTATION: self.client.id, **self._marks}):
                    futures = self.client.map(
                        self._run_task,
                        [item.spec for item in items],
                        key=[item.spec["key"] for item in items],
                        pure=False,
                        retries=0,
                        priority=priority,
                        resources=resources,
                    )
            except Exception as exc:  # one failed group must not stop the others
                log.warning("could not submit %d attempt(s): %s", len(items), exc)
                for item in items:
                    self.fail(item.key, self._submit_error_info(exc))
                continue
            now = time.monotonic()
            for item, future in zip(items, futures, strict=True):
                name = item.spec["key"]
                self._track.add(name, item.key, future)
                submitted.append((name, future))
                info = EventInfo(
                    "submitted to dask", kind="queued", external_executor_id=self._external_id(name)
                )
                if not self._queued_reports.hold(item.key, info, now):
                    self.queued(item.key, info)
        self._watcher.watch(self.client, submitted)

    # ---- harvesting --------------------------------------------------------------------

    def sync(self) -> None:
        """Report started and finished attempts, and QUEUED those that waited
        ``queued_report_seconds`` without either; O(started + finished), not O(in flight).

        Acknowledges to the keeper the outcomes the previous calls reported (the contract
        is that the caller recorded them before this heartbeat), every ACK_INTERVAL."""
        if self._conn is None or not self._follow_connection():
            return
        self._recorded += self._unacked
        now = time.monotonic()
        if self._recorded and now - self._acked_at >= ACK_INTERVAL:
            acknowledge(self.client, self._recorded)
            self._recorded, self._acked_at = [], now
        self._reporter.started()
        self._reporter.outcomes(self._track.drain_finished())
        self._harvest_futures(self._done.drain())
        self._unacked = self._reporter.take_reported()
        for key, info in self._queued_reports.due(now):
            if key in self.running:  # else it ended without an outcome event (withdrawn)
                self.queued(key, info)

    def change_state(
        self,
        key: TaskInstanceKey,
        state: TaskInstanceState,
        info: Any = None,
        remove_running: bool = True,
    ) -> None:
        if state is not TaskInstanceState.QUEUED:
            self._queued_reports.settled(key)
        super().change_state(key, state, info, remove_running)

    def _harvest_futures(self, names: list[str]) -> None:
        """Report what Dask told this client alone: a graph it could not load."""
        found: dict[str, Harvested] = {}
        for name in dict.fromkeys(names):
            future = self._track.future(name)
            if future is None:
                continue
            try:
                harvested = from_future(future, self._external_id(name))
            except Exception as exc:  # the loop must go on: report it as an error
                info = EventInfo(f"could not read the outcome: {exc}", kind="error",
                                 external_executor_id=self._external_id(name))  # fmt: skip
                harvested = Harvested(TaskInstanceState.FAILED, info, None)
            if harvested is None:  # not an outcome: the future is of no further use
                self._track.drop_future(name)
            else:
                found[name] = harvested
        self._reporter.report(found)  # first: taken from _done, they exist nowhere else
        if any(h.info.kind == "error" and _lost_runner(h.info.reason) for h in found.values()):
            # A restarted Dask scheduler (or worker) lost the plugins: install them again
            # so that the attempts the scheduler retries find the runner.
            log.warning("the Dask cluster lost airdask's runner; installing it again")
            try:
                self._install_runner()
            except ShippingError as exc:  # not a reason to stop: the retry's error tries again
                log.error("could not install airdask's runner again: %s", exc)

    def _reconcile(self, names: list[str], why: str) -> bool:
        """Ask the keeper about ``names``: report the finished, keep the running, and report
        the ones it does not know as lost (outcome unknown). False if it could not be asked
        (the caller asks again)."""
        try:
            answers = lookup(self.client, names)
        except KeeperError as exc:
            log.warning("%s; will ask again", exc)
            return False
        outcomes = {n: a["outcome"] for n, a in answers.items() if a and "outcome" in a}
        self._reporter.outcomes(list(outcomes.items()))
        self._reporter.lose([n for n in names if answers.get(n) is None], why)
        return True

    def _fetch_kept_logs(self, worker: str, names: list[str]) -> dict[str, str | None]:
        if not self._connected():
            return dict.fromkeys(names)
        return take_kept_logs(self.client, self._take_kept_logs, worker, names)

    # ---- stopping ----------------------------------------------------------------------

    def end(self) -> None:
        """Wait for every attempt in flight, report it, then close what we created.

        While the Dask scheduler is unreachable there is nothing to wait for that could
        arrive: the attempts left are reported ``connection_lost``."""
        if self._conn is None:
            return
        quiet = 0.0
        while len(self._track):
            if not self._follow_connection():
                self._reporter.lose(self._track.names(), "the Dask scheduler is unreachable")
                break
            self._reporter.started()
            arrived = self._track.wait_finished(timeout=1.0)
            self._reporter.outcomes(arrived)
            self._harvest_futures(self._done.drain())
            quiet = 0.0 if arrived else quiet + 1.0
            if quiet >= END_SWEEP_SECONDS:  # a safety net, should an event be lost
                quiet = 0.0
                self._reconcile(self._track.names(), "unknown to the Dask scheduler")
        self._reporter.started()
        if self._connected():
            # What was recorded before end() (its contract); not what end() harvested: the
            # caller records that after end() returns, and a caller that dies first leaves
            # it to its successor's adoption. Those copies expire in the keeper.
            acknowledge(self.client, self._recorded + self._unacked, wait=True)
        self._reporter.take_reported()
        self._unacked, self._recorded = [], []
        self._close()

    def terminate(self) -> None:
        """Kill running commands, cancel waiting ones, report all as killed, close."""
        if self._conn is None:
            return
        names = self._track.names()
        if self._connected():
            try:
                withdraw(self.client, names, f"{OUR_CANCEL_PREFIX} terminated")
            except KeeperError as exc:  # stopping goes on: report them all the same
                log.error("%s; they may still run", exc)
        for name in names:
            key = self._track.forget(name)
            if key is not None:
                self.fail(key, EventInfo("terminated", kind="killed",
                                         external_executor_id=self._external_id(name)))  # fmt: skip
        self._close()

    def _close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self._logs.close()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            unsubscribe(conn.client, runner.STARTED_TOPIC, self._track.on_started)
            unsubscribe(conn.client, runner.FINISHED_TOPIC, self._on_finished)
        except Exception:
            log.debug("could not unsubscribe", exc_info=True)
        conn.close()

    # ---- optional methods --------------------------------------------------------------

    def revoke_task(self, *, ti: TaskInstance) -> None:
        """Cancel the attempt if it waits, kill it if it runs; no event follows.

        :raises KeeperError: the Dask scheduler cannot be reached (or refused), so the
            attempt may still run; it stays tracked, and a later revoke tries again."""
        key = ti.key
        self.queued_tasks.pop(key, None)
        name = dask_key(key)
        if self._conn is None or self._track.ti_key(name) is None:
            return
        if not self._connected():
            raise KeeperError(f"cannot withdraw {key}: the Dask scheduler is unreachable")
        withdraw(self.client, [name], f"{OUR_CANCEL_PREFIX} revoked")
        self._track.forget(name)
        self.running.discard(key)

    def cleanup_stuck_queued_tasks(self, tis: list[TaskInstance]) -> list[str]:
        """Revoke each (see :meth:`revoke_task`); raises if any could not be withdrawn."""
        lines = []
        for ti in tis:
            self.revoke_task(ti=ti)
            lines.append(f"{ti.key}: cancelled in Dask after being stuck in queued")
        return lines

    def try_adopt_task_instances(self, tis: Sequence[TaskInstance]) -> Sequence[TaskInstance]:
        """Take over the attempts of ``tis`` that the keeper of this Dask scheduler knows
        (see :mod:`airdask.executors.dask.adoption`); return those it does not. Raises
        :class:`~airdask.executors.dask.adoption.KeeperError` when the keeper cannot be
        asked: then nothing is known about any of them, and none must be reset."""
        self._ensure_started()
        found, not_adopted = find_adoptable(self.client, self.scheduler_id, tis)
        finished = {}
        for entry in found:
            self._track.add(entry.name, entry.ti.key, None)
            self.running.add(entry.ti.key)
            if entry.outcome is not None:
                finished[entry.name] = entry.outcome
            log.info("adopted %s (dask key %s, %s)", entry.ti.key, entry.name,
                     "finished" if entry.outcome is not None else "in flight")  # fmt: skip
        self._reporter.outcomes(list(finished.items()))
        return not_adopted

    def get_task_log(self, ti: TaskInstance, try_number: int) -> tuple[list[str], list[str]]:
        """The live log while the attempt runs (from its worker: every worker is asked when
        this executor did not submit it), else the file in ``[logging] base_log_folder``."""
        key = ti.key.with_try_number(try_number)
        name = dask_key(key)
        running = self._track.ti_key(name) is not None or ti.state in ("queued", "running")
        if running and self._connected():
            live = live_log(self.client, self._read_live_log, name, self._track.worker_of(name))
            if live is not None:
                return live
        self._logs.wait(key)
        return read_log(self.base_log_folder, key)

    @staticmethod
    def get_cli_commands() -> list[click.Command]:
        # Lazy: the CLI pulls in click and rich, which running attempts never needs.
        from airdask.executors.dask.cli import dask_group

        return [dask_group]


def _lost_runner(reason: str) -> bool:
    """Whether a Dask error says the scheduler or a worker could not load airdask's runner
    (the scheduler reports only that the graph could not be deserialised)."""
    return runner.SHIPPED_MODULE in reason or "deserialization of the task graph" in reason
