"""DaskExecutor: the BaseExecutor contract on a dask.distributed cluster.

One Dask task per attempt, keyed by :func:`airdask.commands.dask_key` (unique per attempt,
grouped as ``dag_id.task_id`` on the dashboard), submitted with ``pure=False``, ``retries=0``
and ``priority=priority_weight``. The function that runs on the worker is
:func:`airdask.runner.run_task`, shipped by value (:mod:`airdask.executors.dask.shipping`),
so workers need not have airdask.

External id
    ``external_executor_id`` is ``"<dask scheduler id>/<dask key>"``. The futures of each
    submission are also published, up to 100 per dataset ``airdask/<client id>/<uuid>``, on
    the scheduler, so that after the scheduler process died a new executor re-attaches to them
    (``get_dataset``) instead of running them again; a dataset whose attempts were all
    harvested is removed (in batches, at least every 0.5 s, and when the executor stops).
    Adoption happens only on the same Dask scheduler (same id).

Outcomes (``EventInfo.kind``)
    the runner's kinds (``success``, ``exit_code``, ``exception``, ``timeout``, ...),
    ``worker_died`` (``KilledWorker``), ``killed`` (revoked/terminated by us, or cancelled by
    Dask), ``no_worker`` (a queue/pool no worker offers) and ``connection_lost`` (the Dask
    scheduler went away: the outcome is unknown, not a task failure).

Logs
    The runner returns the tail of each attempt's log (``[dask] log_max_bytes``); it is
    written to ``[logging] base_log_folder`` on a background thread, so the file appears
    shortly after the event. ``get_task_log`` waits for it, and ``end()``/``terminate()``
    flush every pending write.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from airdask import runner
from airdask.commands import build_spec, dask_key
from airdask.executors.base import BaseExecutor, QueuedTaskInstanceType, TaskTuple
from airdask.executors.common import execution_timeout
from airdask.executors.dask.adoption import (
    DATASET_MAX,
    Published,
    dataset_name,
    find_adoptable,
    publish,
    unpublish,
)
from airdask.executors.dask.connect import DaskConnection, connect, security_from_config
from airdask.executors.dask.done import DoneQueue, DoneWatcher
from airdask.executors.dask.harvest import Harvested, classify_batch
from airdask.executors.dask.ops import cluster_summary, kill_and_cancel, live_log
from airdask.executors.dask.routing import NoWorkerError, ResourceRouter
from airdask.executors.dask.shipping import (
    install,
    light,
    reference,
    register_runner,
    shipped,
)
from airdask.executors.dask.submit import Pending, chunked_groups
from airdask.executors.dask.task_logs import LogWriter
from airdask.executors.dask.tracking import Tracker, subscribe, unsubscribe
from airdask.executors.events import EventInfo, timestamp
from airdask.logs import read_log
from airdask.state import TaskInstanceKey, TaskInstanceState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    import click

    from airdask.commands import Command
    from airdask.config import Config
    from airdask.store.models import TaskInstance

log = logging.getLogger(__name__)

#: While end() waits, this long without a finished attempt makes it look at every future
#: in flight itself (O(in flight), so not on every sync).
END_SWEEP_SECONDS = 10.0


class DaskExecutor(BaseExecutor):
    """Runs attempts on a Dask cluster (attached by address, via a Client, or embedded).

    :param cluster_address: ``tcp://`` or ``tls://`` address; ``None`` reads
        ``[dask] cluster_address``; empty means the current Client, else an embedded cluster.
    :param client: an existing ``distributed.Client`` to reuse (never closed by us).
    :param security: a ``distributed.Security``; ``None`` reads ``[dask] tls_*``.
    :param reuse_current_client: with neither address nor client, use this process's
        current ``distributed.Client`` if there is one (a notebook's) before starting an
        embedded cluster.
    :param adoptable: publish each attempt so a new executor can adopt it after a crash
        (one extra scheduler round trip per heartbeat batch).
    :param resource_ttl: seconds the workers' resources are cached for routing.
    """

    is_local = False

    def __init__(
        self,
        cluster_address: str | None = None,
        *,
        client: Any | None = None,
        security: Any | None = None,
        parallelism: int | None = None,
        adoptable: bool = True,
        reuse_current_client: bool = True,
        resource_ttl: float = 5.0,
        config: Config | None = None,
    ) -> None:
        super().__init__(parallelism, config=config)
        if cluster_address is None:
            cluster_address = str(self.config.get("dask", "cluster_address")) or None
        self.cluster_address = cluster_address
        self.security = security if security is not None else security_from_config(self.config)
        self.adoptable = adoptable
        self.reuse_current_client = reuse_current_client
        self.resource_ttl = resource_ttl
        self.pool_policy = str(self.config.get("dask", "pool_resources"))
        self.log_max_bytes = int(self.config.get("dask", "log_max_bytes"))
        self.base_log_folder = str(self.config.get("logging", "base_log_folder"))
        self._given_client = client
        self._conn: DaskConnection | None = None
        self._router: ResourceRouter | None = None
        self._done = DoneQueue()
        self._watcher = DoneWatcher(self._done)
        self._track = Tracker()
        self._logs = LogWriter(self.base_log_folder)
        self._published = Published()
        self._meta: dict[TaskInstanceKey, tuple[int, str | None, int]] = {}
        self._pending: list[Pending] | None = None
        self.scheduler_id: str | None = None

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
        self._heavy_run_task = shipped(runner.run_task)
        self._run_task: Callable[..., Any] = self._heavy_run_task
        self._kill_tasks = shipped(runner.kill_tasks)
        self._read_live_log = shipped(runner.read_live_log)
        self._conn = connect(
            self.config,
            address=self.cluster_address,
            client=self._given_client,
            security=self.security,
            reuse_current_client=self.reuse_current_client,
        )
        client = self._conn.client
        self._install_runner()
        self.scheduler_id = str(client.scheduler_info(n_workers=0)["id"])
        self._router = ResourceRouter(client, policy=self.pool_policy, ttl=self.resource_ttl)
        subscribe(client, runner.STARTED_TOPIC, self._track.on_started)
        subscribe(client, runner.FINISHED_TOPIC, self._track.on_finished)
        log.info(
            "DaskExecutor on %s (dashboard: %s)",
            client.scheduler.address,
            self.dashboard_link or "none",
        )

    def _install_runner(self) -> None:
        """Put the runner on the cluster and choose how tasks name it (see ``shipping``)."""
        heavy = self._heavy_run_task
        reached = install(self.client, [heavy, self._kill_tasks, self._read_live_log])
        if reached == "everywhere":  # the other two are rare: they keep their blobs
            self._run_task = reference(heavy)
        else:
            self._run_task = light(heavy) if reached == "workers" else heavy

    def _external_id(self, key: str) -> str:
        return f"{self.scheduler_id}/{key}"

    # ---- submitting --------------------------------------------------------------------

    def _process_tasks(self, task_tuples: list[TaskTuple]) -> None:
        self.remember_queued(self.queued_tasks, task_tuples)
        with self.batch():
            super()._process_tasks(task_tuples)

    def remember_queued(
        self,
        queued_tasks: Mapping[TaskInstanceKey, QueuedTaskInstanceType],
        task_tuples: list[TaskTuple],
    ) -> None:
        """Keep the priority and pool of attempts about to reach ``execute_async``: the base
        class drops their ``queued_tasks`` entries (which alone hold them) before the call."""
        for key, *_ in task_tuples:
            entry = queued_tasks.get(key)
            if entry is not None:
                _, priority, _, ti = entry
                self._meta[key] = (priority, ti.pool, ti.pool_slots)

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
            self._submit(pending)

    def execute_async(
        self,
        key: TaskInstanceKey,
        command: Command,
        queue: str | None = None,
        executor_config: Any | None = None,
    ) -> None:
        if self._conn is None:
            self.start()
        assert self._router is not None
        priority, pool, pool_slots = self._meta.pop(key, (1, None, 1))
        if not self._connected():
            raise ConnectionError(
                f"not connected to the Dask scheduler (client {self.client.status})"
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
        submitted: dict[str, Any] = {}
        for priority, resources, items in chunked_groups(pending):
            try:
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
            for item, future in zip(items, futures, strict=True):
                name = item.spec["key"]
                self._track.add(name, item.key, future)
                submitted[name] = future
                self.queued(
                    item.key,
                    EventInfo(
                        "submitted to dask",
                        kind="queued",
                        external_executor_id=self._external_id(name),
                    ),
                )
        self._watcher.watch(self.client, list(submitted.items()))
        if self.adoptable:
            self._publish(submitted)

    def _connected(self) -> bool:
        return self._conn is not None and self._conn.client.status == "running"

    def _publish(self, futures: dict[str, Any]) -> None:
        if not futures or not self._connected():
            return
        owner, items = str(self.client.id), list(futures.items())
        datasets = {
            dataset_name(owner): dict(items[i : i + DATASET_MAX])
            for i in range(0, len(items), DATASET_MAX)
        }
        if publish(self.client, datasets):
            for name, group in datasets.items():
                self._published.add(name, group)

    def _unpublish(self, names: list[str]) -> None:
        # Without a scheduler there is nothing to remove, and the call would block until
        # the client's reconnect timeout.
        if names and self.adoptable and self._connected():
            unpublish(self.client, names)

    # ---- harvesting --------------------------------------------------------------------

    def sync(self) -> None:
        """Report started and finished attempts; O(started + finished), not O(in flight)."""
        self._report_started()
        self._harvest(self._done.drain())
        self._unpublish(self._published.due())  # also once work has stopped

    def _report_started(self) -> None:
        for name, event in self._track.drain_started():
            key = self._track.ti_key(name)
            if key is None:
                continue
            self.running_state(
                key,
                EventInfo(
                    f"running on {event.get('worker')}",
                    kind="running",
                    external_executor_id=self._external_id(name),
                    worker=event.get("worker"),
                    hostname=event.get("hostname"),
                    started_at=timestamp(event.get("started_at")),
                ),
            )

    def _harvest(self, names: list[str]) -> None:
        # Every call, even with nothing finished: events of other executors arrive too. A
        # pushed outcome travels ahead of its future's completion, so it is in by now.
        self._track.drain_finished()
        mine = []
        for name in dict.fromkeys(names):  # a key is queued once, but never report it twice
            future = self._track.future(name)
            if future is not None:
                mine.append((name, future))
        if not mine:
            return
        ext = {name: self._external_id(name) for name, _ in mine}
        try:
            outcomes = classify_batch(self.client, mine, ext, self._track.pushed_outcome)
        except Exception as exc:  # the loop must go on: report each as an error
            log.exception("could not classify %d finished attempt(s)", len(mine))
            outcomes = {
                name: Harvested(
                    TaskInstanceState.FAILED,
                    EventInfo(
                        f"could not read the outcome: {exc}",
                        kind="error",
                        external_executor_id=ext[name],
                    ),
                    None,
                )
                for name, _ in mine
            }
        del mine
        if any(h.info.kind == "error" and _lost_runner(h.info.reason) for h in outcomes.values()):
            # A restarted Dask scheduler (or worker) lost the plugins: install them again
            # so that the attempts the scheduler retries find the runner.
            log.warning("the Dask cluster lost airdask's runner; installing it again")
            self._install_runner()
        logs = []
        for name, harvested in outcomes.items():
            harvested.info.worker = harvested.info.worker or self._track.worker_of(name)
            key = self._track.forget(name)
            if key is None:
                continue
            text = harvested.log_text
            logs.append((key, f"[airdask] {harvested.info.reason}\n" if text is None else text))
            if harvested.state is TaskInstanceState.SUCCESS:
                self.success(key, harvested.info)
            else:
                self.fail(key, harvested.info)
        self._logs.submit(logs)
        if self.adoptable:
            self._published.done(outcomes)

    # ---- stopping ----------------------------------------------------------------------

    def end(self) -> None:
        """Wait for every attempt in flight, report it, then close what we created."""
        if self._conn is None:
            return
        quiet = 0.0
        while len(self._track):
            self._report_started()
            done = self._done.wait(timeout=1.0)
            quiet = 0.0 if done else quiet + 1.0
            if quiet >= END_SWEEP_SECONDS:  # a safety net, should a notification be lost
                quiet = 0.0
                futures = [(n, self._track.future(n)) for n in self._track.names()]
                done = [n for n, f in futures if f is not None and f.done()]
            self._harvest(done)
        self.sync()
        self._close()

    def terminate(self) -> None:
        """Kill running commands, cancel waiting ones, report all as killed, close."""
        if self._conn is None:
            return
        names = self._track.names()
        self._kill(names, "terminated")
        for name in names:
            key = self._track.forget(name)
            if key is not None:
                self.fail(key, EventInfo("terminated", kind="killed",
                                         external_executor_id=self._external_id(name)))  # fmt: skip
        self._close()

    def _close(self) -> None:
        self._unpublish(self._published.take_all())
        self._logs.close()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            unsubscribe(conn.client, runner.STARTED_TOPIC, self._track.on_started)
            unsubscribe(conn.client, runner.FINISHED_TOPIC, self._track.on_finished)
        except Exception:
            log.debug("could not unsubscribe", exc_info=True)
        conn.close()

    def _kill(self, names: list[str], reason: str) -> None:
        """Kill the process groups of running attempts, then cancel all of them."""
        if not names or not self._connected():
            return
        futures = [f for f in (self._track.future(n) for n in names) if f is not None]
        kill_and_cancel(self.client, self._kill_tasks, names, futures, reason)

    # ---- optional methods --------------------------------------------------------------

    def revoke_task(self, *, ti: TaskInstance) -> None:
        """Cancel the attempt if it waits, kill it if it runs; no event follows."""
        key = ti.key
        self.queued_tasks.pop(key, None)
        name = dask_key(key)
        if self._conn is None or self._track.ti_key(name) is None:
            return
        self._kill([name], "revoked")
        self._track.forget(name)
        self.running.discard(key)
        self._published.done([name])

    def cleanup_stuck_queued_tasks(self, tis: list[TaskInstance]) -> list[str]:
        lines = []
        for ti in tis:
            self.revoke_task(ti=ti)
            lines.append(f"{ti.key}: cancelled in Dask after being stuck in queued")
        return lines

    def try_adopt_task_instances(self, tis: Sequence[TaskInstance]) -> Sequence[TaskInstance]:
        """Re-attach to the attempts of ``tis`` still on this Dask scheduler (see
        :mod:`airdask.executors.dask.adoption`); return those that could not be."""
        if self._conn is None:
            self.start()
        found, not_adopted = find_adoptable(self.client, self.scheduler_id, tis)
        for entry in found:
            self.adopt_future(entry.ti.key, entry.name, entry.future, entry.dataset)
            log.info("adopted %s (dask key %s, %s)", entry.ti.key, entry.name, entry.future.status)
        return not_adopted

    def get_task_log(self, ti: TaskInstance, try_number: int) -> tuple[list[str], list[str]]:
        key = ti.key.with_try_number(try_number)
        name = dask_key(key)
        if self._conn is not None and self._track.ti_key(name) is not None:
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

    def adopt_future(self, key: TaskInstanceKey, name: str, future: Any, dataset: str) -> None:
        """Track a future found in ``dataset`` as if this executor had submitted it. Once the
        attempts this executor adopted from ``dataset`` are harvested, it removes the dataset
        (with whatever else it still held: those were not handed to this executor)."""
        self._published.add(dataset, [name])
        self._track.add(name, key, future)
        self.running.add(key)
        self._watcher.watch(self.client, [(name, future)])


def _lost_runner(reason: str) -> bool:
    """Whether a Dask error says the scheduler or a worker could not load airdask's runner
    (the scheduler reports only that the graph could not be deserialised)."""
    return runner.SHIPPED_MODULE in reason or "deserialization of the task graph" in reason
