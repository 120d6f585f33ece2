"""BaseExecutor: Airflow 2.10's executor surface and semantics, kept verbatim.

Writing your own executor
=========================

An executor runs task instances' *commands* somewhere and reports what happened. It lives
inside the scheduler process: the scheduler calls it, it never calls the scheduler.

**One thread.** Every method below is called by the scheduler's thread (the one running
:meth:`airdask.scheduler.loop.SchedulerJob.run`, or your test), one call at a time, never
concurrently. An executor that watches its backend from threads of its own (the built-in
ones do) must not touch ``running``, ``queued_tasks`` or ``event_buffer`` from them: hand
what they learn to ``sync()`` through a queue (:func:`airdask.executors.common.drain_queue`)
and report it there.

The scheduler drives it like this, on every loop pass::

    executor.queue_command(ti, command, priority=ti.priority_weight, queue=ti.queue)
    executor.heartbeat()                     # trigger_tasks(open slots) + sync()
    for key, (state, info) in executor.get_event_buffer().items():
        ...                                  # persist the outcome

Lifecycle: ``start()`` once, before the first ``heartbeat()``; then passes; then ``end()``
(wait for what runs) or ``terminate()`` (kill it). ``end()`` may be called twice, and after
``terminate()`` (a run that timed out is terminated, then ended by the scheduler's stop):
the second call does nothing. ``end()`` and ``terminate()`` may also follow a ``start()``
that raised, to release what it acquired. A caller that skips ``start()`` (a notebook, a
test) still gets a started executor from the built-in ones: each method that needs what
``start()`` acquires (``execute_async``, adoption, revoking) calls
:meth:`BaseExecutor._ensure_started` first, and their ``start()`` returns at once when the
executor is already started.

**A heartbeat acknowledges the last handover.** The scheduler calls ``heartbeat()`` (and
``end()``) only once every event it took from ``get_event_buffer()`` is written to the
database. While the database is out it keeps those events and does not heartbeat, for as
long as the outage lasts. So an executor may treat its next ``heartbeat()`` as "what you
handed me last time is recorded" and release whatever it kept to recover it (the
DaskExecutor releases harvested attempts then); until that heartbeat, what it handed over
must stay recoverable by a scheduler that adopts its attempts after a crash. The other
calls (``queue_command``, ``try_adopt_task_instances``, ``cleanup_stuck_queued_tasks``,
``revoke_task``) may come between a handover and its acknowledgement.

**What to report, so that a task is not taken for stuck.** The scheduler marks a task
instance QUEUED when it queues the command. If nothing moves it on within
``[scheduler] task_queued_timeout`` (600 s), it is *stuck*: the scheduler withdraws it
(``cleanup_stuck_queued_tasks``) and schedules another try. So report ``running_state(key,
info)`` when the attempt starts, at the latest (the local executors do, with
:func:`airdask.executors.common.report_started`; ADR 0005); ``queued(key, info)`` when the
backend accepts it is optional and records ``info.external_executor_id``. Then exactly one
``success(key, info)`` or ``fail(key, info)`` per attempt handed to ``execute_async``: it
also frees the attempt's slot.

**What ``info`` is.** An :class:`~airdask.executors.events.EventInfo`: the reason (one line a
person reads in ``airdask tasks states``), its ``kind`` (one of
:data:`~airdask.executors.events.OutcomeKind`; ``connection_lost`` means "outcome unknown",
and the scheduler then does not count a failure against the task), and where known the
host, worker, start and end times, exit code and external id. A plain string is accepted
too (it becomes the reason), as Airflow allows anything there.

**Waking the scheduler (optional).** Between passes the scheduler waits on
:attr:`BaseExecutor.arrivals` (an :class:`~airdask.executors.arrivals.Arrivals`), for as many
outcomes as make its next pass worth running, up to a short pause. An executor that learns of
outcomes on a thread of its own calls ``self.arrivals.add()`` there for each one, and the
scheduler wakes as soon as they are in; one that learns of them only in ``sync()`` need do
nothing, and the scheduler waits its whole pause (``[scheduler] batch_wait`` while attempts
run, ``loop_interval`` when nothing moved).

Leave these alone (the scheduler relies on their exact behaviour): ``heartbeat``,
``queue_command``, ``get_event_buffer``, ``has_task``, ``send_callback``, ``trigger_tasks``,
``change_state``/``success``/``fail``/``queued``/``running_state``. The one hook meant for
subclasses is :meth:`BaseExecutor._before_process` (priority and pool of each attempt).

Implement the two mandatory methods:

* ``execute_async(key, command, queue=None, executor_config=None)``: start the attempt and
  return at once. Raise if it cannot be started; the base class turns the exception into a
  FAILED event for that task alone and the other tasks go on.
* ``sync()``: called by every ``heartbeat()``; collect finished attempts and report each with
  ``self.success(key, info)`` or ``self.fail(key, info)``.

And, as far as your backend allows, the optional ones: ``start``, ``end``, ``terminate``,
``cleanup_stuck_queued_tasks``, ``revoke_task``, ``try_adopt_task_instances``,
``get_cli_commands``, ``get_task_log``. Their defaults below say what "not supported" means.

A minimal executor that runs argv commands one at a time in the scheduler's thread (this
example runs as written: ``tests/executors/test_executor_doc.py`` runs it as a doctest)::

    >>> import subprocess
    >>> from airdask.executors import BaseExecutor, EventInfo
    >>> class InlineExecutor(BaseExecutor):
    ...     is_local = True
    ...
    ...     def __init__(self, parallelism=None, *, config=None):
    ...         super().__init__(parallelism, config=config)
    ...         self._todo = []
    ...
    ...     def execute_async(self, key, command, queue=None, executor_config=None):
    ...         if not isinstance(command, list):
    ...             raise TypeError("InlineExecutor runs argv commands only")
    ...         self._todo.append((key, command))
    ...
    ...     def sync(self):
    ...         while self._todo:
    ...             key, argv = self._todo.pop(0)
    ...             self.running_state(key, EventInfo("started", kind="running"))
    ...             code = subprocess.run(argv).returncode
    ...             if code == 0:
    ...                 self.success(key, EventInfo("exit code 0"))
    ...             else:
    ...                 info = EventInfo(f"exit code {code}", kind="exit_code", exit_code=code)
    ...                 self.fail(key, info)
    ...
    ...     def end(self):
    ...         self.sync()  # runs what is left; a second call finds nothing to do
    ...
    ...     def terminate(self):
    ...         for key, _ in self._todo:
    ...             self.fail(key, EventInfo("terminated before it started", kind="killed"))
    ...         self._todo.clear()

:mod:`airdask.testing` drives it as the scheduler would::

    >>> from airdask.testing import drain, make_ti
    >>> ex = InlineExecutor(parallelism=2)
    >>> ex.start()
    >>> ok, bad = make_ti("ok"), make_ti("bad")
    >>> ex.queue_command(ok, ["true"])
    >>> ex.queue_command(bad, ["sh", "-c", "exit 3"])
    >>> events = drain(ex, [ok.key, bad.key], timeout=30)
    >>> events[ok.key][0].value, str(events[bad.key][1])
    ('success', 'exit code 3')
    >>> ex.end()
    >>> ex.end()
    >>> ex.running, ex.queued_tasks
    (set(), {})
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from airdask.executors.arrivals import Arrivals
from airdask.executors.events import EventInfo
from airdask.state import TaskInstanceKey, TaskInstanceState

if TYPE_CHECKING:
    import click

    from airdask.commands import Command
    from airdask.config import Config
    from airdask.store.models import TaskInstance

log = logging.getLogger(__name__)

#: (command, priority, queue, task instance), as Airflow stores a queued task.
QueuedTaskInstanceType = tuple["Command", int, str | None, "TaskInstance"]
#: (state, info) of an event-buffer entry.
EventBufferValueType = tuple[TaskInstanceState | None, Any]
#: (key, command, queue, executor_config) handed to execute_async.
TaskTuple = tuple[TaskInstanceKey, "Command", str | None, Any]


class CallbackSink(Protocol):
    """Where ``send_callback`` delivers callback requests (the scheduler provides one)."""

    def send(self, request: Any) -> None: ...


class NotSupportedError(NotImplementedError):
    """An optional executor method this executor cannot provide; the message says why."""


class ClusterUnreachableError(RuntimeError):
    """``start()`` could not reach the executor's cluster or broker: not a mistake in the
    configuration, so trying again later may succeed (a scheduler daemon waits for it)."""


@dataclass
class RunningRetryAttemptType:
    """Tracks a key that is queued again while the executor still counts it as running.

    As Airflow 2.10's: the loop does not block on it, but re-checks it on each pass for at
    least ``MIN_SECONDS``; the first check past that is allowed, the next gives up.
    """

    MIN_SECONDS = 10.0
    total_tries: int = field(default=0, init=False)
    tries_after_min: int = field(default=0, init=False)
    first_attempt: float = field(default_factory=time.monotonic, init=False)

    @property
    def elapsed(self) -> float:
        """Seconds since the first attempt."""
        return time.monotonic() - self.first_attempt

    def can_try_again(self) -> bool:
        """False once a try was made more than ``MIN_SECONDS`` after the first, else True."""
        if self.tries_after_min > 0:
            return False
        self.total_tries += 1
        elapsed = self.elapsed
        if elapsed > self.MIN_SECONDS:
            self.tries_after_min += 1
        log.debug("elapsed=%s tries=%s", elapsed, self.total_tries)
        return True


class BaseExecutor:
    """The executor contract (the module docstring tells how to write one). Subclasses
    implement ``execute_async`` and ``sync``.

    Build an executor without side effects: connect, spawn and open in :meth:`start`. Extra
    constructor options are keyword-only (``load_executor`` passes ``parallelism``,
    ``config`` and what the caller asks for, e.g. the DaskExecutor's ``worker_resources``).

    :param parallelism: most attempts running at once (0 = unlimited). ``None`` reads
        ``[core] parallelism`` from the configuration.
    :param config: resolved settings; ``None`` loads them when the executor is built.
    :raises ValueError: ``parallelism`` is negative.
    :raises airdask.config.ConfigError: ``config`` is None and the configuration is bad.
    """

    #: Runs in the scheduler's machine (True) or on remote workers (False).
    is_local: bool = False
    #: Safe for production use.
    is_production: bool = True
    #: Set by the scheduler: its job id, recorded as ``queued_by_job_id``.
    job_id: int | None = None
    #: Set by the scheduler: where ``send_callback`` delivers.
    callback_sink: CallbackSink | None = None

    def __init__(self, parallelism: int | None = None, *, config: Config | None = None) -> None:
        if config is None:
            from airdask.config import load_config

            config = load_config()
        self.config = config
        self.parallelism: int = config.core.parallelism if parallelism is None else int(parallelism)
        if self.parallelism < 0:
            raise ValueError(f"parallelism must be >= 0 (0 = unlimited), got {self.parallelism}")
        self.queued_tasks: dict[TaskInstanceKey, QueuedTaskInstanceType] = {}
        self.running: set[TaskInstanceKey] = set()
        self.event_buffer: dict[TaskInstanceKey, EventBufferValueType] = {}
        self.attempts: dict[TaskInstanceKey, RunningRetryAttemptType] = {}
        self._arrivals = Arrivals()

    @property
    def arrivals(self) -> Arrivals:
        """Where this executor counts the outcomes it learns of outside ``sync()`` (see
        "Waking the scheduler"); an :class:`~airdask.scheduler.executors.ExecutorSet` hands
        one counter to all its executors."""
        return self._arrivals

    @arrivals.setter
    def arrivals(self, value: Arrivals) -> None:
        self._arrivals = value

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} parallelism={self.parallelism} "
            f"queued={len(self.queued_tasks)} running={len(self.running)}>"
        )

    def _html_fields(self) -> dict[str, Any]:
        """Keyword arguments for :func:`airdask.display.executor_html` (status,
        dashboard_link, scheduler_address, workers, resources, counts); subclasses may extend
        the dict. The base fills in what every executor knows."""
        counts = {"queued": len(self.queued_tasks), "running": len(self.running)}
        for state, _ in self.event_buffer.values():  # outcomes not yet handed over
            name = state.value if state is not None else "none"
            counts[name] = counts.get(name, 0) + 1
        busy = len(self.running) + len(self.queued_tasks)
        return {
            "status": f"busy ({busy} attempts)" if busy else "idle",
            "dashboard_link": getattr(self, "dashboard_link", None),
            "counts": counts,
        }

    def _repr_html_(self) -> str:
        """Jupyter's rich display, as a ``distributed.Client`` has one."""
        from airdask.display import executor_html

        return executor_html(name=type(self).__name__, **self._html_fields())

    # ---- the part the scheduler drives; do not override ------------------------------

    def start(self) -> None:
        """Acquire resources (connections, worker processes, clusters).

        Called once, by the scheduler's thread, before the first ``heartbeat()`` (again only
        after it raised :class:`ClusterUnreachableError`). The default does nothing.

        :raises ClusterUnreachableError: the cluster or broker did not answer (it may be
            restarting): ``airdask scheduler`` calls ``start()`` again, with pauses, for
            ``[scheduler] executor_start_timeout`` seconds, without ``terminate()`` in
            between, so a ``start()`` that raises it must leave nothing that a second call
            trips over.
        :raises Exception: the backend cannot be reached or built; the message says why (the
            CLI shows it as one line). The caller then calls ``terminate()`` (the CLI) or
            ``end()`` (the scheduler's stop) to release what was acquired, so both must
            cope with a half-done ``start()``.
        """

    def _ensure_started(self) -> None:
        """Start lazily, for a caller that skipped ``start()``.

        Call it first in any method that needs what ``start()`` acquires. It calls
        ``start()`` every time, so an executor that uses it makes ``start()`` return at once
        when already started (a cheap check of what it acquired).
        """
        self.start()

    def queue_command(
        self,
        task_instance: TaskInstance,
        command: Command,
        priority: int = 1,
        queue: str | None = None,
    ) -> None:
        """Queue ``command`` for ``task_instance``; it starts on a later ``heartbeat``.

        :param task_instance: the attempt; its ``key`` (dag, task, run, try, map index)
            names it in every later call and event.
        :param command: an argv list, or a :class:`~airdask.commands.PythonCommand`.
        :param priority: higher starts first (``ti.priority_weight``).
        :param queue: the task's queue, for executors that route by it.

        A task instance whose key is already queued is not queued twice (logged as an error).
        """
        key = task_instance.key
        if key not in self.queued_tasks:
            log.debug("adding to queue: %s", key)
            self.queued_tasks[key] = (command, priority, queue, task_instance)
        else:
            log.error("could not queue task %s: it is already queued", key)

    def has_task(self, task_instance: TaskInstance) -> bool:
        """Whether this attempt is queued in, or running through, this executor (its
        outcome not yet reported)."""
        key = task_instance.key
        return key in self.queued_tasks or key in self.running

    @property
    def slots_available(self) -> int:
        """How many more attempts may be queued (``sys.maxsize`` when unlimited)."""
        if self.parallelism:
            return self.parallelism - len(self.running) - len(self.queued_tasks)
        return sys.maxsize

    @property
    def slots_occupied(self) -> int:
        """Attempts queued in, or running through, this executor."""
        return len(self.running) + len(self.queued_tasks)

    def heartbeat(self) -> None:
        """Start as many queued attempts as slots allow (highest priority first), then sync.

        Called by the scheduler's thread on every pass, and only once every event it took
        before is recorded (see "A heartbeat acknowledges the last handover" above). Does
        not raise for one task's failure to start (that becomes its FAILED event); what
        ``sync()`` raises propagates and stops the scheduler."""
        if self.parallelism:
            open_slots = self.parallelism - len(self.running)
        else:
            open_slots = len(self.queued_tasks)
        log.debug(
            "%s heartbeat: %d open slots, %d queued, %d running",
            type(self).__name__,
            open_slots,
            len(self.queued_tasks),
            len(self.running),
        )
        self.trigger_tasks(open_slots)
        self.sync()

    def order_queued_tasks_by_priority(
        self,
    ) -> list[tuple[TaskInstanceKey, QueuedTaskInstanceType]]:
        """Queued tasks, highest priority first; equal priorities keep insertion order."""
        return sorted(self.queued_tasks.items(), key=lambda item: item[1][1], reverse=True)

    def trigger_tasks(self, open_slots: int) -> None:
        """Hand up to ``open_slots`` queued attempts to ``execute_async``.

        A key that is queued while the executor still counts it as running (its previous
        report not yet harvested) stays queued for a while and is then dropped, as in Airflow.
        """
        task_tuples: list[TaskTuple] = []
        first = self.order_queued_tasks_by_priority()[: max(open_slots, 0)]
        for key, (command, _, queue, ti) in first:
            if key in self.running:
                attempt = self.attempts.setdefault(key, RunningRetryAttemptType())
                if attempt.can_try_again():
                    log.info("task %s is queued but still running; trying again later", key)
                    continue
                log.error(
                    "could not queue task %s: still running after %d attempts",
                    key,
                    attempt.total_tries,
                )
                del self.attempts[key]
                del self.queued_tasks[key]
            else:
                self.attempts.pop(key, None)
                task_tuples.append((key, command, queue, ti.executor_config))
        if task_tuples:
            self._before_process({key: self.queued_tasks[key] for key, *_ in task_tuples})
            self._process_tasks(task_tuples)

    def _before_process(self, entries: Mapping[TaskInstanceKey, QueuedTaskInstanceType]) -> None:
        """Hook: the queued entries ``trigger_tasks`` is about to hand to ``execute_async``
        (by ``_process_tasks``), while they are still in ``queued_tasks``.

        Each entry is ``(command, priority, queue, task instance)``; ``execute_async`` gets
        only the command, queue and executor_config, so an executor that needs an
        attempt's priority or pool (the DaskExecutor asks Dask for them) keeps them here.
        Called on the scheduler's thread, once per batch. The default does nothing.
        """

    def _process_tasks(self, task_tuples: list[TaskTuple]) -> None:
        """Move each attempt from ``queued_tasks`` to ``running`` and ``execute_async`` it;
        one that raises is reported FAILED (``kind="submit_error"``) and the rest go on.
        Subclasses may wrap it (to batch submissions) but must call it."""
        for key, command, queue, executor_config in task_tuples:
            del self.queued_tasks[key]
            self.running.add(key)
            try:
                self.execute_async(
                    key=key, command=command, queue=queue, executor_config=executor_config
                )
            except Exception as exc:
                # One bad task must not take the scheduler loop down with it.
                log.warning("could not start %s: %s", key, exc, exc_info=log.isEnabledFor(10))
                self.fail(key, self._submit_error_info(exc))

    def _submit_error_info(self, exc: Exception) -> EventInfo:
        return EventInfo(f"could not start: {type(exc).__name__}: {exc}", kind="submit_error")

    def change_state(
        self,
        key: TaskInstanceKey,
        state: TaskInstanceState,
        info: Any = None,
        remove_running: bool = True,
    ) -> None:
        """Record an event for ``key``; by default also free its slot.

        :param state: SUCCESS or FAILED (an outcome), QUEUED or RUNNING (progress).
        :param info: see "What ``info`` is" in the module docstring.
        :param remove_running: free the attempt's slot (outcomes do; progress does not).

        A later event for the same key, before the scheduler takes the buffer, replaces the
        earlier one (an outcome thus wins over the RUNNING reported in the same pass)."""
        if remove_running:
            try:
                self.running.remove(key)
            except KeyError:
                log.debug("could not find key %s in running", key)
        self.event_buffer[key] = (state, info)

    def fail(self, key: TaskInstanceKey, info: Any = None) -> None:
        """Report that the attempt failed (free its slot); ``info`` says why."""
        self.change_state(key, TaskInstanceState.FAILED, info)

    def success(self, key: TaskInstanceKey, info: Any = None) -> None:
        """Report that the attempt succeeded (free its slot)."""
        self.change_state(key, TaskInstanceState.SUCCESS, info)

    def queued(self, key: TaskInstanceKey, info: Any = None) -> None:
        """Report that the backend accepted the attempt (optional); ``info`` carries its
        ``external_executor_id``. Not an outcome: the slot stays taken."""
        self.change_state(key, TaskInstanceState.QUEUED, info, remove_running=False)

    def running_state(self, key: TaskInstanceKey, info: Any = None) -> None:
        """Report that the attempt started (its task instance becomes RUNNING). Report it
        when the attempt starts, or the task instance may be taken for stuck in queued
        after ``[scheduler] task_queued_timeout``. Not an outcome: the slot stays taken."""
        self.change_state(key, TaskInstanceState.RUNNING, info, remove_running=False)

    def get_event_buffer(
        self, dag_ids: Sequence[str] | None = None
    ) -> dict[TaskInstanceKey, EventBufferValueType]:
        """Return and clear the events (only those of ``dag_ids`` when given).

        The scheduler calls it after each ``heartbeat()``; what it returns is the handover
        that the next ``heartbeat()`` acknowledges."""
        if dag_ids is None:
            cleared, self.event_buffer = self.event_buffer, {}
            return cleared
        wanted = set(dag_ids)
        cleared = {}
        for key in list(self.event_buffer):
            if key.dag_id in wanted:
                cleared[key] = self.event_buffer.pop(key)
        return cleared

    def send_callback(self, request: Any) -> None:
        """Deliver a callback request to the scheduler's callback sink.

        :raises ValueError: no sink is set (the scheduler sets ``callback_sink`` before use).
        """
        if self.callback_sink is None:
            raise ValueError("callback sink is not set: the scheduler sets it before use")
        self.callback_sink.send(request)

    # ---- mandatory ---------------------------------------------------------------------

    def execute_async(
        self,
        key: TaskInstanceKey,
        command: Command,
        queue: str | None = None,
        executor_config: Any | None = None,
    ) -> None:
        """Start one attempt and return at once (mandatory).

        Called by ``trigger_tasks`` (scheduler's thread) with the attempt already counted in
        ``running``. Do not block on the attempt: report its outcome from ``sync()``.

        :param key: names the attempt in every event you report for it.
        :param command: an argv list (run it without a shell) or a
            :class:`~airdask.commands.PythonCommand`; :func:`airdask.commands.build_spec`
            turns either into the runner's self-contained spec.
        :param queue: the task's queue, or None.
        :param executor_config: the task's ``executor_config`` (a dict, or None); airdask's
            executors read ``execution_timeout`` (seconds or timedelta) from it.
        :raises Exception: the attempt cannot be started (bad command, backend refused).
            Only that task fails, with the message as its reason.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement execute_async")

    def sync(self) -> None:
        """Collect finished attempts into the event buffer (mandatory).

        Called by every ``heartbeat()`` (scheduler's thread) and should return quickly: ask
        the backend without waiting long, report each finished attempt once with
        ``success``/``fail`` (and starts with ``running_state``). Raising stops the
        scheduler: ride out a backend's passing trouble inside (the DaskExecutor reports
        nothing new while its cluster is unreachable, and reconciles once it is back).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement sync")

    # ---- optional ----------------------------------------------------------------------

    def end(self) -> None:
        """Wait for every running attempt to finish and report it, then release resources.

        Like ``heartbeat()``, called only once the events already taken are recorded; the
        scheduler takes the events ``end()`` leaves in the buffer afterwards. May be called
        again, and after ``terminate()``: then it does nothing.

        :raises NotSupportedError: by default; the scheduler then stops without waiting for
            the attempts (they are orphans for another scheduler to adopt or reset).
        """
        raise NotSupportedError(f"{type(self).__name__} does not implement end()")

    def terminate(self) -> None:
        """Stop every running attempt now (kill their processes), then release resources.

        Report each attempt that was queued or running as FAILED (``kind="killed"``), so
        that nothing stays counted in ``running``. May be called after ``end()``, twice, or
        after a ``start()`` that raised (release what was acquired; do not raise for what
        was never started).

        :raises NotSupportedError: by default.
        """
        raise NotSupportedError(f"{type(self).__name__} does not implement terminate()")

    def cleanup_stuck_queued_tasks(self, tis: list[TaskInstance]) -> list[str]:
        """Give up on task instances stuck in queued: revoke each, return a line per TI.

        Return only when every TI passed in was withdrawn (it will not start, or was
        killed): the scheduler then reschedules (or fails) them all; the returned lines
        describe what was done, for the log.

        :raises NotSupportedError: the executor cannot withdraw work; the scheduler then
            tries ``revoke_task`` for each TI.
        :raises Exception: any other error means "not all withdrawn": the scheduler tries
            ``revoke_task`` for each TI, and one whose revoke does not succeed stays QUEUED
            (its attempt may still start) until the next check.
        """
        raise NotSupportedError(
            f"{type(self).__name__} cannot clean up stuck queued tasks: it has no way to "
            "withdraw work it handed over"
        )

    def revoke_task(self, *, ti: TaskInstance) -> None:
        """Withdraw one attempt: cancel it if waiting, kill it if running. No event follows.

        Returning means the attempt will not run (any more); revoking an attempt the
        executor does not have is a success. Raise when that cannot be made sure (e.g. the
        cluster cannot be reached): the scheduler leaves the TI QUEUED and asks again later,
        rather than starting another try beside an attempt that may still run.

        :raises NotSupportedError: the executor cannot withdraw anything (a stuck TI is then
            rescheduled without it, as in Airflow).
        """
        raise NotSupportedError(f"{type(self).__name__} cannot revoke tasks")

    def try_adopt_task_instances(self, tis: Sequence[TaskInstance]) -> Sequence[TaskInstance]:
        """Take over attempts started by a scheduler that died; return those not adopted.

        :param tis: QUEUED or RUNNING task instances whose scheduler job is dead; their
            ``external_executor_id`` is what this executor reported for them, if anything.
        :raises Exception: the backend cannot be asked now.

        Return a TI only when its attempt is known not to run any more (or never to have
        started): the scheduler resets what is returned and schedules another try. Raise
        when the backend cannot be asked: the scheduler then resets nothing and offers the
        same TIs again at its next orphan check. Several schedulers may share a database:
        each TI is offered to one of them only.

        The default adopts nothing: every TI is returned and the scheduler resets it.
        """
        return tis

    @staticmethod
    def get_cli_commands() -> list[click.Command]:
        """Extra ``airdask`` CLI commands (click commands or groups) this executor offers.

        Called without an instance, at CLI start-up (:mod:`airdask.cli.extra`); keep the
        module's imports light, and import the backend inside the commands."""
        return []

    def get_task_log(self, ti: TaskInstance, try_number: int) -> tuple[list[str], list[str]]:
        """``(messages, log_lines)`` for one attempt, from wherever the executor keeps it.

        :param ti: the task instance; ``try_number`` picks the attempt.
        :returns: messages about where the log came from (or why there is none) and the
            log's lines; ``([], [])`` by default. ``airdask tasks logs`` reads
            ``[logging] base_log_folder`` first and asks the executor only for the log of
            an attempt still queued or running that has none there yet.
        """
        return [], []
