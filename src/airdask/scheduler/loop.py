"""The scheduler job: one pass (:meth:`SchedulerJob.run_once`) and the loop around it.

A pass, in order:

0. write what an earlier pass could not (:mod:`.held`: events, adoptions, callback logs);
1. start queued DagRuns this job may take (create their task instances);
2. evaluate trigger rules for not-yet-started task instances of runs where something
   changed (``scheduled``, ``skipped`` or ``upstream_failed``): only those whose upstreams
   changed (:mod:`.readiness`);
3. pick ready task instances (``scheduled``, or ``up_for_retry`` whose ``next_try_at`` has
   come), highest ``priority_weight`` first, within pool open slots, ``[core] parallelism``
   (global across executors) and the ``slots_available`` of the TI's executor; mark them
   QUEUED with the next ``try_number`` and the executor's id, commit, then
   ``executor.queue_command`` on that executor;
4. ``heartbeat()`` each executor; persist their ``get_event_buffer()`` (see :mod:`.events`);
5. finish runs whose task instances are all finished; run callbacks;
6. now and then: heartbeat the Job row, adopt-or-reset orphans (and look at every running
   run again), handle stuck-in-queued. While :meth:`SchedulerJob.run` runs, a thread
   heartbeats the Job row during passes too (:mod:`.liveness`): a slow pass is not a death.

Every query is on indexed state columns and bounded by the work at hand (runs that changed,
ready task instances, events), never by the history. One task's problem (its DAG no longer
loads, its command cannot be built) fails that task with the reason; the loop goes on.

Several schedulers may share one PostgreSQL database: steps 1-3 and 5 work under row locks
(:mod:`.claims`), events change only the task instances this job queued, and each job adopts
the orphans of dead ones under locks too (:mod:`.recovery`). On SQLite, one scheduler
(:mod:`.jobs`).

The scheduler hosts every executor of ``[core] executor`` (:mod:`.executors`): each task
instance goes to the one its task names, and recovery asks only the executor it went to.

The database may go away for a moment (a restart, a failover). A transient error
(:func:`airdask.store.transient.is_transient`) ends the pass, not the scheduler: the loop
waits (0.1 s, doubling to 5 s) and passes again, for as long as it takes. A pass cut short
leaves nothing half-done — its transaction is rolled back and the runs it was examining
stay marked for the next pass — and what the executor already handed over is kept
(:mod:`.held`). **The executor is not heartbeaten while events taken from its
``get_event_buffer()`` are not yet written**: an executor may take a heartbeat (and
``end()``) to mean that everything it handed over before is recorded, and release what it
kept for it (the DaskExecutor does). After an outage the scheduler declares no other job
dead for ``scheduler_health_check_threshold`` seconds: the others could not heartbeat
either.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from types import FrameType

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from airdask.commands import Command
from airdask.config import Config
from airdask.dag import DAG, BaseTask
from airdask.dashboard.summary import SummaryPublisher, dask_client_of
from airdask.executors.base import BaseExecutor
from airdask.executors.names import UnknownExecutorError
from airdask.scheduler import jobs, recovery
from airdask.scheduler.attempts import AttemptCommands, AttemptError
from airdask.scheduler.callbacks import CallbackSink, callback_requests, log_rows
from airdask.scheduler.claims import (
    RunKey,
    claim_queued_runs,
    claim_running_runs,
    run_scope,
)
from airdask.scheduler.dagcache import DagCache
from airdask.scheduler.dagscan import DagFolderScan
from airdask.scheduler.events import add_ti_log, apply_events, set_state, watch_states
from airdask.scheduler.executors import ExecutorSet, check_dag_executors
from airdask.scheduler.heap import HeapFreeze
from airdask.scheduler.held import Held, merge_events
from airdask.scheduler.liveness import Heartbeats
from airdask.scheduler.outage import Outage, patiently
from airdask.scheduler.pacing import pause_after
from airdask.scheduler.readiness import Readiness
from airdask.scheduler.ready import queue_ready
from airdask.scheduler.runs import fail_run, finish_runs, start_run
from airdask.scheduler.schedules import Clock, Schedules
from airdask.state import DagRunState, TaskInstanceState
from airdask.store.checkpoints import Checkpointer
from airdask.store.models import DagRun, Job, TaskInstance, utcnow
from airdask.store.session import Store
from airdask.store.transient import is_transient

log = logging.getLogger(__name__)
S = TaskInstanceState
#: Most task instances handed to the executor in one pass (Airflow's max_tis_per_query).
MAX_TIS_PER_PASS = 512
#: Most seconds between two reads of every running run's end, whatever its readiness says.
FINISH_RECHECK_SECONDS = 5.0
#: Longest :meth:`SchedulerJob.stop` keeps trying to reach the database to record the end.
STOP_DB_PATIENCE = 30.0


class JobDeclaredDead(RuntimeError):
    """Another scheduler declared this job dead (its heartbeat was too old) and took over
    its task instances; this scheduler must stop."""


@dataclass
class PassResult:
    started_runs: int = 0
    settled: int = 0  # trigger-rule decisions that changed a state
    queued: int = 0
    events: int = 0
    finished_runs: dict[RunKey, str] | None = None
    created_runs: int = 0  # scheduled runs created (see .schedules)

    @property
    def busy(self) -> bool:
        return bool(
            self.created_runs or self.started_runs or self.settled or self.queued or self.events
        )


class SchedulerJob:
    """A scheduler: a Job row, executors inside, and the passes that drive both.

    :param executor: the executors (an :class:`~.executors.ExecutorSet`), or one executor,
        which is then the only one (``[core] parallelism`` still limits it globally).

    :param run_filter: only these runs (``airdask run``); ``None`` takes every run not owned
        by another live job, beside any other scheduler on the same PostgreSQL database.
    :param dags: DAGs already loaded (by id); others are loaded from the run's ``dag_file``
        or ``[core] dags_folder``.
    :param clock: the time that decides when scheduled runs are due (default: real UTC
        time); tests hand in a fake one. Only an unfiltered scheduler creates scheduled runs.
    """

    def __init__(
        self,
        *,
        store: Store,
        executor: BaseExecutor | ExecutorSet,
        config: Config,
        run_filter: Sequence[RunKey] | None = None,
        dags: Mapping[str, DAG] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        if isinstance(executor, ExecutorSet):
            self.executors = executor
        else:
            parallelism = config.core.parallelism
            self.executors = ExecutorSet.single(executor, parallelism=parallelism)
        #: The default executor (the first of :attr:`executors`).
        self.executor = self.executors.default
        self.config = config
        self.run_filter = None if run_filter is None else list(run_filter)
        self.dag_cache = DagCache(dags, dags_folder=config.core.dags_folder)
        #: The cache's DAGs by id (the same dict).
        self.dags = self.dag_cache.dags
        self.dag_scan = DagFolderScan(config.core.dags_folder)
        self.schedules = Schedules(clock=clock, dag_of=self._scheduled_dag)
        self._schedules_synced = False
        self.sink = CallbackSink()
        #: Builds each attempt's command (context, templates, upstream results).
        self.attempts = AttemptCommands(max_result_bytes=config.core.max_result_bytes)
        self.job_id: int | None = None
        #: Set when the caller already started the executor (``airdask run`` does, to
        #: report an unreachable cluster before writing anything).
        self.executor_started = False
        self.dirty: set[RunKey] = set()
        self.readiness = Readiness()
        self._finish_checked = 0.0  # monotonic time of the last read of every run's end
        self.held = Held()
        #: DAGs out of full garbage collections while the scheduler runs (see :mod:`.heap`)
        self.heap = HeapFreeze()
        self._stop = threading.Event()
        self._last_heartbeat = 0.0
        #: The heartbeat thread while :meth:`run` runs (see :mod:`.liveness`).
        self._heartbeats: Heartbeats | None = None
        self._last_orphan_check = 0.0
        self._last_stuck_check = 0.0
        self.heartbeat_interval = config.scheduler.job_heartbeat_sec
        self.health_threshold = config.scheduler.scheduler_health_check_threshold
        self.outage = Outage(threshold=self.health_threshold, stop=self._stop)
        self.orphan_interval = config.scheduler.orphaned_tasks_check_interval
        self.queued_timeout = config.scheduler.task_queued_timeout
        self.stuck_retries = config.scheduler.num_stuck_in_queued_retries
        self.loop_interval = config.scheduler.loop_interval
        self.batch_wait = config.scheduler.batch_wait
        self.summary_publisher = SummaryPublisher(
            interval=config.scheduler.dashboard_summary_interval
        )
        #: SQLite's WAL checkpoints, off the loop's thread while the scheduler runs.
        self.checkpoints = Checkpointer(store.engine)

    # ---- lifecycle ---------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """``SchedulerJob`` for an unfiltered scheduler, else ``RunJob`` (see :mod:`.jobs`)."""
        return jobs.SCHEDULER if self.run_filter is None else jobs.RUN

    def register(self) -> int:
        """Create the Job row (before anything else is written for this scheduler)."""
        with self.store.session() as session:
            self.job_id = jobs.register(
                session, kind=self.kind, executor_class=self.executors.label()
            )
        for executor in self.executors:
            executor.job_id = self.job_id
            executor.callback_sink = self.sink
        self._last_heartbeat = time.monotonic()
        return self.job_id

    def start(self) -> None:
        """Register (if not yet), claim the job's kind (refused for a second scheduler on
        SQLite: :class:`~airdask.scheduler.jobs.SchedulerConflict`), start the executors,
        and recover what dead jobs left."""
        if self.job_id is None:
            self.register()
        job_id = self.job_id
        assert job_id is not None
        with self.store.session() as session:
            jobs.claim_kind(session, job_id, kind=self.kind, threshold=self.health_threshold)
        if not self.executor_started:
            self.executors.start()
            self.executor_started = True
        self.checkpoints.start()

        def startup() -> None:
            with self._watching(), self.store.session() as session:
                self.dirty |= set(self._running_runs(session))
            with self._watching():
                self._recover(force=True)
            self._heartbeat_job(force=True)

        self.outage.retry_until_stopped(startup)
        self._back_online()
        self.heap.settle(self.dags)

    def stop(self, *, state: str = "success") -> None:
        """``end()`` each executor (waits for running attempts), persist their outcomes,
        mark the Job row finished.

        ``end()`` counts as a heartbeat: it is called only once every event already taken
        from the executor is written. If the database stays out for
        :data:`STOP_DB_PATIENCE` seconds, the executor is left as it is (its attempts keep
        running, adoptable) and the Job row is left for another scheduler to declare dead."""
        try:
            self._stop_all(state)
        finally:
            self.checkpoints.stop()

    def _stop_all(self, state: str) -> None:
        self.heap.release()
        # Before end(): an embedded cluster (and its dashboard) closes with the executor.
        self._publish_summary(force=True)
        deadline = time.monotonic() + STOP_DB_PATIENCE
        if not patiently(self._write_held, deadline=deadline):
            log.error(
                "the database stayed unreachable: %d outcomes are not recorded; leaving the "
                "executor's attempts running for the next scheduler to adopt or reset",
                len(self.held.events),
            )
            return
        try:
            self.executors.end()
        finally:
            self._take_events()
            if patiently(self._write_held, deadline=deadline):
                patiently(lambda: self._finish_job(state), deadline=deadline)

    def _finish_job(self, state: str) -> None:
        if self.job_id is None:
            return
        with self.store.session() as session:
            job = session.get(Job, self.job_id)
            if job is not None:
                if job.state == "running":  # a job declared dead stays failed
                    job.state = state
                job.end_date, job.latest_heartbeat = utcnow(), utcnow()
            # Unfinished runs go back to any scheduler (``airdask scheduler`` finishes them).
            session.execute(
                update(DagRun)
                .where(
                    DagRun.scheduled_by_job_id == self.job_id,
                    DagRun.state.in_([DagRunState.QUEUED.value, DagRunState.RUNNING.value]),
                )
                .values(scheduled_by_job_id=None)
            )

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop after its current pass; safe from any thread (what
        SIGTERM/SIGINT do)."""
        self._stop.set()
        self.executors.arrivals.wake()  # a loop waiting between passes stops now

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def install_signal_handlers(self) -> Callable[[], None]:
        """SIGTERM/SIGINT ask the loop to stop after the current pass; returns an undo."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, frame: FrameType | None) -> None:
            log.warning("received %s: stopping the scheduler", signal.Signals(signum).name)
            self.request_stop()

        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

        def undo() -> None:
            for sig, previous in old.items():
                signal.signal(sig, previous)

        return undo

    def run(
        self,
        *,
        until: Callable[[], bool] | None = None,
        on_pass: Callable[[PassResult], None] | None = None,
        handle_signals: bool = True,
    ) -> None:
        """Start, pass until ``until()`` holds or a stop is requested, then :meth:`stop`.

        A transient database error in a pass (or in ``on_pass``/``until``) is waited out
        (see the module docstring); any other error stops the scheduler."""
        undo = self.install_signal_handlers() if handle_signals else (lambda: None)
        state = "success"
        try:
            self.start()
            assert self.job_id is not None
            self._heartbeats = Heartbeats(self.store, self.job_id,
                                          interval=self.heartbeat_interval,
                                          threshold=self.health_threshold)  # fmt: skip
            self._heartbeats.start()
            while not self._stop.is_set():
                try:
                    result = self.run_once()
                    self._back_online()
                    if on_pass is not None:
                        on_pass(result)
                    if until is not None and until():
                        break
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    self._lost_database(exc)
                    continue
                self._pause(result)
        except BaseException:
            state = "failed"
            raise
        finally:
            try:
                # Beats go on while end() waits for the attempts, for STALL_FACTOR thresholds
                # (300 s) at most: an end() waiting longer lets another scheduler take over.
                self.stop(state=state)
            finally:
                if self._heartbeats is not None:
                    self._heartbeats.stop()
                    self._heartbeats = None
                undo()

    def _pause(self, result: PassResult) -> None:
        """Wait before the next pass as :mod:`.pacing` says: for outcomes, briefly."""
        pause = pause_after(
            result,
            in_flight=self.executors.slots_occupied,
            full_budget=MAX_TIS_PER_PASS,
            loop_interval=self.loop_interval,
            batch_wait=self.batch_wait,
        )
        if pause is not None and not self._stop.is_set():
            self.executors.arrivals.wait(pause.outcomes, pause.seconds)

    def _lost_database(self, exc: BaseException) -> None:
        self.outage.wait_out(exc, kept=len(self.held.events))
        self._last_heartbeat = float("-inf")  # heartbeat at the first pass that gets through

    def _back_online(self) -> None:
        if self.outage.ongoing:  # the outage ends once this went through too
            with self._watching(), self.store.session() as session:
                requeued = recovery.requeue_unsent(session, self.executors, job_id=self.job_id)
            self.dirty |= requeued
            self.outage.back_online()

    # ---- one pass ----------------------------------------------------------------------

    @contextmanager
    def _watching(self) -> Iterator[None]:
        """Every task instance state this scheduler changes reaches its readiness at once
        (:func:`~airdask.scheduler.events.watch_states`); when what it wrote is not
        committed after all, everything readiness kept is read again."""
        with watch_states(self.readiness):
            try:
                yield
            except BaseException:
                self.readiness.clear()
                raise

    def run_once(self) -> PassResult:
        with self._watching():
            return self._pass()

    def _pass(self) -> PassResult:
        result = PassResult()
        self._write_held()
        self._heartbeat_job()  # here and at the end (and from .liveness during the pass)
        self.dag_cache.refresh()
        evaluated: set[RunKey] = set()
        try:
            with self.store.session() as session:
                result.created_runs = self._create_scheduled_runs(session)
                result.started_runs = self._start_queued_runs(session)
                evaluated = self._take_dirty()
                result.settled = self._evaluate_dirty(session, evaluated)
                queued = self._queue_ready(session)
        except BaseException:
            self.dirty |= evaluated  # examined again at the next pass
            raise
        for ti, command in queued:
            executor = self.executors.of_ti(ti)
            assert executor is not None  # queue_ready recorded one of ours
            executor.queue_command(ti, command, priority=ti.priority_weight, queue=ti.queue)
        result.queued = len(queued)
        self.executors.heartbeat()
        self._take_events()
        try:
            result.events = self._write_events()
            with self.store.session() as session:
                result.finished_runs = self._finish_runs(session, evaluated | self.dirty)
        except BaseException:
            self.dirty |= evaluated
            raise
        self._run_callbacks()
        self._heartbeat_job()
        self._recover()
        self._publish_summary()
        self.heap.settle(self.dags)  # a DAG loaded or reloaded in this pass
        return result

    def _publish_summary(self, *, force: bool = False) -> None:
        """Feed the airdask page of the Dask dashboard (a no-op without a Dask client)."""
        self.summary_publisher.maybe_publish(
            self.store.session, dask_client_of(self.executors), force=force
        )

    def _take_dirty(self) -> set[RunKey]:
        dirty, self.dirty = self.dirty, set()
        return dirty

    def _run_scope(self) -> ColumnElement[bool]:
        return run_scope(self.job_id, self.run_filter)

    def _running_runs(self, session: Session) -> list[RunKey]:
        stmt = select(DagRun.dag_id, DagRun.run_id).where(
            DagRun.state == DagRunState.RUNNING.value, self._run_scope()
        )
        return [(dag_id, run_id) for dag_id, run_id in session.execute(stmt)]

    def _dag_of_run(self, session: Session, dag_id: str, run_id: str) -> DAG | None:
        if dag_id in self.dags:
            return self.dags[dag_id]
        run = session.get(DagRun, (dag_id, run_id))
        return self.dag_cache.get(dag_id, run.dag_file if run is not None else None)

    def _scheduled_dag(self, dag_id: str) -> DAG | None:
        return self.dags.get(dag_id) or self.dag_scan.dags.get(dag_id)

    def _create_scheduled_runs(self, session: Session) -> int:
        """Sync the ``dag`` rows of new or changed DAGs, create the runs that are due (an
        unfiltered scheduler only; see :mod:`.schedules`)."""
        if self.run_filter is not None:
            return 0
        changed = self.dag_scan.scan(force=not self._schedules_synced)
        if not self._schedules_synced:
            changed = [*self.dags.values(), *changed]
        if changed:
            self.schedules.sync(session, {d.dag_id: d for d in changed}.values())
        self._schedules_synced = True
        return self.schedules.create_due(session)

    def _start_queued_runs(self, session: Session) -> int:
        runs = claim_queued_runs(session, self._run_scope())
        self.schedules.new_pass()
        started = 0
        for run in runs:
            dag = self.dag_cache.get(run.dag_id, run.dag_file)
            if dag is None:
                fail_run(session, run, self.dag_cache.errors[run.dag_id])
                started += 1
                continue
            problems = check_dag_executors(dag, self.executors.names)
            if problems:  # nothing of it could be queued: say why now, not per task
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                fail_run(session, run, problems[0] + more)
                started += 1
                continue
            if not self.schedules.may_start(session, dag):
                continue  # max_active_runs: it waits, queued
            started += 1
            count = start_run(session, run, dag)
            log.info("started run %s of %s (%d task instances)", run.run_id, run.dag_id, count)
            self.dirty.add((run.dag_id, run.run_id))
        return started

    def _evaluate_dirty(self, session: Session, runs: set[RunKey]) -> int:
        """Trigger rules for the not-yet-started TIs of changed runs (see :mod:`.ready`);
        a run another scheduler is examining is left for the next pass."""
        claimed, busy = claim_running_runs(session, runs)
        self.dirty |= busy
        changed = 0
        for (dag_id, run_id), run in claimed.items():
            dag = self.dags.get(dag_id) or self.dag_cache.get(dag_id, run.dag_file)
            if dag is None:
                continue
            count, settled = self.readiness.evaluate(session, dag, run_id)
            changed += count
            if settled:
                self.dirty.add((dag_id, run_id))
        return changed

    def _finish_runs(self, session: Session, runs: set[RunKey]) -> dict[RunKey, str]:
        """Finish the runs among ``runs`` whose task instances are all finished. A run its
        readiness proves unfinished is not read (two queries a pass, whatever changed),
        except every FINISH_RECHECK_SECONDS, so that a count gone wrong delays a run's end
        and never keeps it running."""
        now = time.monotonic()
        if now - self._finish_checked < FINISH_RECHECK_SECONDS:
            runs = {key for key in runs if not self.readiness.surely_unfinished(key)}
        else:
            self._finish_checked = now
        claimed, busy = claim_running_runs(session, runs)
        self.dirty |= busy
        finished = finish_runs(session, claimed.values(), self.dags)
        self.readiness.invalidate(finished)  # done with them
        return finished

    def _queue_ready(self, session: Session) -> list[tuple[TaskInstance, Command]]:
        """Mark ready TIs QUEUED (next try) within every limit; return (ti, command)."""
        self.attempts.new_pass()
        slots = self.executors.slots_available()
        return queue_ready(
            session,
            total=min(self.executors.open_slots, sum(slots.values()), MAX_TIS_PER_PASS),
            scope=self._run_scope(),
            job_id=self.job_id,
            command_for=self._command_for,
            executor_for=self._executor_for,
            executor_slots=slots,
        )

    def _executor_for(self, session: Session, ti: TaskInstance, now: datetime) -> str | None:
        """The id of the executor ``ti``'s task names; None after failing ``ti`` when that
        executor is not configured (a DAG edited since its run started)."""
        dag = self._dag_of_run(session, ti.dag_id, ti.run_id)
        if dag is None or not dag.has_task(ti.task_id):
            return self.executors.default_id  # _command_for fails it with the reason
        try:
            return self.executors.id_for(dag.get_task(ti.task_id).executor)
        except UnknownExecutorError as exc:
            self._fail_unqueued(session, ti, now, f"task {ti.task_id!r}: {exc}")
            return None

    def _command_for(self, session: Session, ti: TaskInstance, now: datetime) -> Command | None:
        dag = self._dag_of_run(session, ti.dag_id, ti.run_id)
        reason = None
        if dag is None:
            reason = self.dag_cache.errors.get(ti.dag_id, f"DAG {ti.dag_id!r} cannot be loaded")
        elif not dag.has_task(ti.task_id):
            reason = f"task {ti.task_id!r} is no longer in DAG {ti.dag_id!r}"
        else:
            try:
                return self.attempts.build(session, dag, ti)
            except AttemptError as exc:  # a template, an upstream result: says what
                reason = str(exc)
            except Exception as exc:  # the task's own error; the others go on
                reason = f"cannot build the command: {type(exc).__name__}: {exc}"
        self._fail_unqueued(session, ti, now, reason)
        return None

    def _fail_unqueued(
        self, session: Session, ti: TaskInstance, now: datetime, reason: str
    ) -> None:
        set_state(ti, S.FAILED)
        ti.end_date, ti.reason = now, reason
        add_ti_log(session, ti, "failed", reason)
        self.dirty.add((ti.dag_id, ti.run_id))

    # ---- events --------------------------------------------------------------------------

    def _take_events(self) -> None:
        """Move the executor's events into :attr:`held` (they stay there until written)."""
        events = self.executors.get_event_buffer()
        merge_events(self.held.events, events)

    def _write_held(self) -> None:
        """Write what earlier passes could not; raises (a transient error) while the
        database is still out."""
        if self.held.adoptions:
            assert self.job_id is not None
            with self.store.session() as session:
                self.held.write_adoptions(session, self.job_id)
            self.held.adoptions = []
        self._write_events()
        self._write_logs()

    def _write_events(self) -> int:
        events = self.held.events
        if not events:
            return 0
        with self.store.session() as session:
            outcomes = apply_events(
                session, events, retry_delay=self._retry_delay, job_id=self.job_id
            )
            requests = callback_requests(session, outcomes.finished, self._task_of)
        self.held.events = {}
        self.dirty |= outcomes.runs
        for request in requests:  # once the outcome is recorded, never twice
            self.executor.send_callback(request)
        return len(events)

    def _task_of(self, ti: TaskInstance) -> BaseTask | None:
        """``ti``'s task in a DAG already loaded, or None (DAG not loaded, task removed)."""
        dag = self.dags.get(ti.dag_id)
        if dag is None or not dag.has_task(ti.task_id):
            return None
        return dag.get_task(ti.task_id)

    def _retry_delay(self, ti: TaskInstance) -> float:
        task = self._task_of(ti)
        return (task.retry_delay or 0.0) if task is not None else 0.0

    def _run_callbacks(self) -> None:
        if self.sink.pending:
            self.held.logs.extend(log_rows(self.sink.run_pending(self.dags.get)))
        self._write_logs()

    def _write_logs(self) -> None:
        if self.held.logs:
            with self.store.session() as session:
                self.held.write_logs(session)
            self.held.logs = []

    # ---- periodic work -----------------------------------------------------------------

    def _heartbeat_job(self, *, force: bool = False) -> None:
        if self.job_id is None:
            return
        if self._heartbeats is not None:
            self._heartbeats.progress()
        now = time.monotonic()
        if not force and now - self._last_heartbeat < self.heartbeat_interval:
            return
        with self.store.session() as session:
            alive = jobs.heartbeat(session, self.job_id)
            if alive and self.run_filter is None:
                self._check_alone(session)
        self._last_heartbeat = now
        if not alive:
            raise JobDeclaredDead(
                f"scheduler job {self.job_id} was declared dead by another scheduler (no "
                f"heartbeat for more than {self.health_threshold:g}s) and its task instances "
                "were taken over; stopping"
            )

    def _check_alone(self, session: Session) -> None:
        """Trust the incremental trigger-rule counts only while no other scheduler may
        write the same runs (see :mod:`.readiness`)."""
        others = jobs.live_schedulers(session, threshold=self.health_threshold)
        alone = all(job.id == self.job_id for job in others)
        if alone != self.readiness.trusted:
            log.info("incremental trigger rules %s", "on" if alone else "off (other schedulers)")
            self.readiness.clear()
            self.readiness.trusted = alone

    def _recover(self, *, force: bool = False) -> None:
        job_id = self.job_id
        assert job_id is not None
        now = time.monotonic()
        if force or now - self._last_orphan_check >= self.orphan_interval:
            report: recovery.RecoveryReport | None = None
            try:
                with self.store.session() as session:
                    report = recovery.adopt_or_reset_orphans(
                        session,
                        self.executors,
                        job_id=job_id,
                        threshold=self.health_threshold,
                        scope=self._run_scope(),
                        declare_dead=self.outage.may_declare_dead(),
                    )
                    # Every running run is examined again now and then: another scheduler
                    # may have recorded the last upstream outcome and stopped (or died)
                    # before it scheduled what follows.
                    self.dirty |= set(self._running_runs(session))
                    self.readiness.clear()  # the safety net: every running run is read again
            except BaseException:
                if report is not None:  # the executor took them over: record that later
                    self.held.adoptions.extend(report.adopted_keys)
                raise
            self._last_orphan_check = now
            self.dirty |= report.runs
        if force or now - self._last_stuck_check >= min(self.queued_timeout / 2, 30.0):
            with self.store.session() as session:
                stuck = recovery.handle_stuck_queued(
                    session,
                    self.executors,
                    job_id=job_id,
                    timeout=self.queued_timeout,
                    max_reschedules=self.stuck_retries,
                )
            self._last_stuck_check = now
            self.dirty |= stuck.runs
