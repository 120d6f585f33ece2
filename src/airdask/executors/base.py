"""BaseExecutor: Airflow 2.10's executor surface and semantics, kept verbatim.

Writing your own executor
=========================

An executor runs task instances' *commands* somewhere and reports what happened. It lives
inside the scheduler process: the scheduler calls it, it never calls the scheduler.

The scheduler drives it like this, on every loop pass::

    executor.queue_command(ti, command, priority=ti.priority_weight, queue=ti.queue)
    executor.heartbeat()                     # trigger_tasks(open slots) + sync()
    for key, (state, info) in executor.get_event_buffer().items():
        ...                                  # persist the outcome

**A heartbeat acknowledges the last handover.** The scheduler calls ``heartbeat()`` (and
``end()``) only once every event it took from ``get_event_buffer()`` is written to the
database. While the database is out it keeps those events and does not heartbeat, for as
long as the outage lasts. So an executor may treat its next ``heartbeat()`` as "what you
handed me last time is recorded" and release whatever it kept to recover it (the
DaskExecutor releases harvested attempts then); until that heartbeat, what it handed over
must stay recoverable by a scheduler that adopts its attempts after a crash. The other
calls (``queue_command``, ``try_adopt_task_instances``, ``cleanup_stuck_queued_tasks``,
``revoke_task``) may come between a handover and its acknowledgement.

Leave these alone (the scheduler relies on their exact behaviour): ``heartbeat``,
``queue_command``, ``get_event_buffer``, ``has_task``, ``send_callback``, ``trigger_tasks``,
``change_state``/``success``/``fail``/``queued``/``running_state``.

Implement the two mandatory methods:

* ``execute_async(key, command, queue=None, executor_config=None)``: start the attempt and
  return at once. Raise if it cannot be started; the base class turns the exception into a
  FAILED event for that task alone and the other tasks go on.
* ``sync()``: called by every ``heartbeat()``; collect finished attempts and report each with
  ``self.success(key, info)`` or ``self.fail(key, info)`` (which also free its slot).

And, as far as your backend allows, the optional ones: ``start``, ``end``, ``terminate``,
``cleanup_stuck_queued_tasks``, ``revoke_task``, ``try_adopt_task_instances``,
``get_cli_commands``, ``get_task_log``. Their defaults below say what "not supported" means.

A minimal executor that runs argv commands one at a time in the scheduler process::

    class InlineExecutor(BaseExecutor):
        def execute_async(self, key, command, queue=None, executor_config=None):
            self._todo.append((key, command))

        def sync(self):
            while self._todo:
                key, argv = self._todo.pop(0)
                ok = subprocess.run(argv).returncode == 0
                (self.success if ok else self.fail)(key)

        def end(self):
            self.sync()
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

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


@dataclass
class RunningRetryAttemptType:
    """Tracks a key that is queued again while the executor still counts it as running."""

    MIN_SECONDS = 10.0
    total_tries: int = 0
    tries_after_min: int = 0
    first_attempt: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.first_attempt

    def can_try_again(self) -> bool:
        """At least MIN_SECONDS and at least 5 tries after that before giving up."""
        if self.tries_after_min > 0:
            self.tries_after_min += 1
        else:
            self.total_tries += 1
            if self.elapsed > self.MIN_SECONDS:
                self.tries_after_min = 1
        return self.tries_after_min < 5


class BaseExecutor:
    """The executor contract. Subclasses implement ``execute_async`` and ``sync``.

    :param parallelism: most attempts running at once (0 = unlimited). ``None`` reads
        ``[core] parallelism`` from the configuration.
    :param config: resolved settings; ``None`` loads them when the executor is built.
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
        """Acquire resources (connections, worker processes). Called once before use."""

    def queue_command(
        self,
        task_instance: TaskInstance,
        command: Command,
        priority: int = 1,
        queue: str | None = None,
    ) -> None:
        """Queue ``command`` for ``task_instance``; it starts on a later ``heartbeat``.

        A task instance whose key is already queued is not queued twice (logged as an error).
        """
        key = task_instance.key
        if key not in self.queued_tasks:
            log.debug("adding to queue: %s", key)
            self.queued_tasks[key] = (command, priority, queue, task_instance)
        else:
            log.error("could not queue task %s: it is already queued", key)

    def has_task(self, task_instance: TaskInstance) -> bool:
        """Whether this attempt is queued in, or running through, this executor."""
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
        return len(self.running) + len(self.queued_tasks)

    def heartbeat(self) -> None:
        """Start as many queued attempts as slots allow (highest priority first), then sync."""
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
        """Record an event for ``key``; by default also free its slot."""
        if remove_running:
            try:
                self.running.remove(key)
            except KeyError:
                log.debug("could not find key %s in running", key)
        self.event_buffer[key] = (state, info)

    def fail(self, key: TaskInstanceKey, info: Any = None) -> None:
        self.change_state(key, TaskInstanceState.FAILED, info)

    def success(self, key: TaskInstanceKey, info: Any = None) -> None:
        self.change_state(key, TaskInstanceState.SUCCESS, info)

    def queued(self, key: TaskInstanceKey, info: Any = None) -> None:
        """Report that the backend accepted the attempt; ``info`` is its external id."""
        self.change_state(key, TaskInstanceState.QUEUED, info, remove_running=False)

    def running_state(self, key: TaskInstanceKey, info: Any = None) -> None:
        """Report that the attempt started on a worker."""
        self.change_state(key, TaskInstanceState.RUNNING, info, remove_running=False)

    def get_event_buffer(
        self, dag_ids: Sequence[str] | None = None
    ) -> dict[TaskInstanceKey, EventBufferValueType]:
        """Return and clear the events (only those of ``dag_ids`` when given)."""
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
        """Deliver a callback request to the scheduler's callback sink."""
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
        """Start one attempt and return at once (mandatory)."""
        raise NotImplementedError(f"{type(self).__name__} must implement execute_async")

    def sync(self) -> None:
        """Collect finished attempts into the event buffer (mandatory)."""
        raise NotImplementedError(f"{type(self).__name__} must implement sync")

    # ---- optional ----------------------------------------------------------------------

    def end(self) -> None:
        """Wait for every running attempt to finish and report it, then release resources.

        Like ``heartbeat()``, called only once the events already taken are recorded."""
        raise NotSupportedError(f"{type(self).__name__} does not implement end()")

    def terminate(self) -> None:
        """Stop every running attempt now (kill their processes), then release resources."""
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
        """Extra ``airdask`` CLI commands (click commands or groups) this executor offers."""
        return []

    def get_task_log(self, ti: TaskInstance, try_number: int) -> tuple[list[str], list[str]]:
        """``(messages, log_lines)`` for one attempt, from wherever the executor keeps it."""
        return [], []
