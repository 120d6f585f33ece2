"""DAGs and tasks: what to run, in which order, with which retries, pool and priority.

A DAG is defined in a Python module, usually as a context manager::

    with DAG("etl", default_args={"retries": 1}) as dag:
        extract = BashTask("extract", "echo extracting")
        load = PythonTask("load", load_rows, op_args=[10], pool="db", priority_weight=5)
        extract >> load

Every mistake that can be seen at definition time is a :class:`DagDefinitionError` naming the
DAG and the task: a duplicate task id, a dependency cycle, an unknown trigger rule, a
negative retry count, an executor_config that cannot be stored. Pools are checked against the
database when a run is created (see :mod:`airdask.scheduler.runs`).

A task's :meth:`~BaseTask.command_in_run` is what the executor runs for one attempt: an
argv list (``BashTask`` -> ``["bash", "-c", script]``, its Jinja templates rendered from the
run context) or a :class:`~airdask.commands.PythonCommand` (upstream results and, when the
callable asks for it, the context in its arguments). See :mod:`airdask.context`.

A PythonTask's return value is kept; a downstream task takes it by passing the upstream
task (or ``task.output``) among its ``op_args``/``op_kwargs``, which also makes it a
dependency::

    extract = PythonTask("extract", read_rows)
    load = PythonTask("load", write_rows, op_args=[extract])   # write_rows(<rows>)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, tzinfo
from typing import Any, TypeVar, Union

from airdask.commands import ArgvInRun, Command, CommandError, PythonCommand
from airdask.context import call_kwargs, context_env_extra, render_template
from airdask.durations import to_seconds
from airdask.params import Param, ParamError, normalise_params, resolve_params
from airdask.state import DEFAULT_POOL as DEFAULT_POOL
from airdask.timetables import Schedule, ScheduleError, Timetable, make_timetable

#: Trigger rules: when a task may run, given its upstream tasks' states (Airflow's meaning).
TRIGGER_RULES = (
    "all_success",
    "all_failed",
    "all_done",
    "one_success",
    "one_failed",
    "one_done",
    "none_failed",
    "none_failed_min_one_success",
    "none_skipped",
    "always",
)
#: Weight rules: how a task's effective priority is computed from its own weight.
WEIGHT_RULES = ("downstream", "upstream", "absolute")

#: Keys ``default_args`` may carry (the task keyword arguments they default).
TASK_ARGS = (
    "retries",
    "retry_delay",
    "pool",
    "pool_slots",
    "queue",
    "priority_weight",
    "weight_rule",
    "executor_config",
    "execution_timeout",
    "trigger_rule",
    "on_success_callback",
    "on_failure_callback",
    "executor",
)

Callback = Callable[[dict[str, Any]], Any]
#: What ``expand`` maps over: a literal list, or an upstream task (or its ``.output``)
#: whose return value is the list.
MapSource = Union[Sequence[Any], "BaseTask", "TaskOutput"]
TaskOrList = Union["BaseTask", Sequence["BaseTask"]]
T = TypeVar("T")


class DagDefinitionError(ValueError):
    """A DAG or task defined wrongly; the message names the DAG, the task and the problem."""


_current_dags: list[DAG] = []


def _seconds(value: float | timedelta | None, what: str) -> float | None:
    seconds = to_seconds(value)
    if seconds is None:
        return None
    if seconds < 0:
        raise DagDefinitionError(f"{what} must not be negative, got {value!r}")
    return seconds


class DAG:
    """A set of tasks and their dependencies.

    :param dag_id: unique name (letters, digits, ``_``, ``-`` and ``.``).
    :param default_args: defaults for the task keyword arguments listed in :data:`TASK_ARGS`.
    :param description: one line shown by ``airdask dags list``.
    :param schedule: when ``airdask scheduler`` creates runs: a cron expression or preset
        (``"@daily"``), a :class:`~datetime.timedelta`, ``"@once"``, or None (only when
        triggered). See :mod:`airdask.timetables`.
    :param start_date: the first data interval starts here (a timezone-aware datetime; its
        timezone is the DAG's: cron expressions are evaluated in it). Needed with a schedule.
    :param catchup: create a run for every interval missed since the last one (or since
        ``start_date``); False runs only the latest complete interval.
    :param max_active_runs: at most this many runs of the DAG run at once; more wait queued.
    :param params: the run's params with their defaults (plain values or
        :class:`~airdask.params.Param`); a run's ``conf`` overrides them and is checked
        against them when the run is triggered (see :mod:`airdask.params`).
    """

    def __init__(
        self,
        dag_id: str,
        *,
        default_args: Mapping[str, Any] | None = None,
        description: str | None = None,
        schedule: Schedule = None,
        start_date: datetime | None = None,
        catchup: bool = False,
        max_active_runs: int = 16,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        if not dag_id or not all(c.isalnum() or c in "_-." for c in dag_id):
            raise DagDefinitionError(
                f"invalid dag_id {dag_id!r}: use letters, digits, '_', '-' and '.'"
            )
        unknown = sorted(set(default_args or {}) - set(TASK_ARGS))
        if unknown:
            raise DagDefinitionError(
                f"DAG {dag_id!r}: unknown default_args {', '.join(unknown)} "
                f"(known: {', '.join(TASK_ARGS)})"
            )
        if isinstance(max_active_runs, bool) or not isinstance(max_active_runs, int):
            raise DagDefinitionError(
                f"DAG {dag_id!r}: max_active_runs must be an integer, got {max_active_runs!r}"
            )
        if max_active_runs < 1:
            raise DagDefinitionError(
                f"DAG {dag_id!r}: max_active_runs must be >= 1, got {max_active_runs}"
            )
        if start_date is not None and not isinstance(start_date, datetime):
            raise DagDefinitionError(
                f"DAG {dag_id!r}: start_date must be a datetime, got {start_date!r}"
            )
        try:
            self.timetable: Timetable = make_timetable(schedule, start_date)
        except ScheduleError as exc:
            raise DagDefinitionError(f"DAG {dag_id!r}: {exc}") from None
        self.schedule = schedule
        self.start_date = start_date
        self.catchup = bool(catchup)
        self.max_active_runs = max_active_runs
        self.dag_id = dag_id
        try:
            self.params: dict[str, Param] = normalise_params(dag_id, params)
        except ParamError as exc:
            raise DagDefinitionError(str(exc)) from None
        self.default_args: dict[str, Any] = dict(default_args or {})
        self.description = description
        self.fileloc: str | None = None
        self.task_dict: dict[str, BaseTask] = {}

    def __repr__(self) -> str:
        return f"<DAG {self.dag_id}: {len(self.task_dict)} tasks>"

    def __enter__(self) -> DAG:
        _current_dags.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _current_dags.remove(self)

    @property
    def timezone(self) -> tzinfo | None:
        """The DAG's timezone: its ``start_date``'s (None without a start_date)."""
        return self.start_date.tzinfo if self.start_date is not None else None

    @property
    def tasks(self) -> list[BaseTask]:
        return list(self.task_dict.values())

    @property
    def task_ids(self) -> list[str]:
        return list(self.task_dict)

    def get_task(self, task_id: str) -> BaseTask:
        try:
            return self.task_dict[task_id]
        except KeyError:
            raise KeyError(f"DAG {self.dag_id!r} has no task {task_id!r}") from None

    def has_task(self, task_id: str) -> bool:
        return task_id in self.task_dict

    def resolve_params(self, conf: Mapping[str, Any] | None) -> dict[str, Any]:
        """The params of a run with this ``conf``.

        :raises airdask.params.ParamError: an unknown key, a wrong type, a missing
            required param (one line; a DAG without params takes any conf)."""
        return resolve_params(self.dag_id, self.params, conf)

    def add_task(self, task: BaseTask) -> None:
        if task.task_id in self.task_dict and self.task_dict[task.task_id] is not task:
            raise DagDefinitionError(
                f"DAG {self.dag_id!r}: duplicate task id {task.task_id!r} "
                "(each task id may appear once per DAG)"
            )
        self.task_dict[task.task_id] = task

    @property
    def roots(self) -> list[BaseTask]:
        return [t for t in self.task_dict.values() if not t.upstream_task_ids]

    @property
    def leaves(self) -> list[BaseTask]:
        return [t for t in self.task_dict.values() if not t.downstream_task_ids]

    def downstream_of(self, task_id: str) -> set[str]:
        """Every task reachable downstream of ``task_id`` (not including it)."""
        return _reachable(task_id, lambda t: self.task_dict[t].downstream_task_ids)

    def upstream_of(self, task_id: str) -> set[str]:
        return _reachable(task_id, lambda t: self.task_dict[t].upstream_task_ids)

    def priority_weights(self) -> dict[str, int]:
        """Each task's effective priority under its weight rule (Airflow's semantics):
        ``downstream`` adds the weights of every downstream task, ``upstream`` of every
        upstream task, ``absolute`` uses the task's own weight."""
        weights: dict[str, int] = {}
        for task_id, task in self.task_dict.items():
            if task.weight_rule == "absolute":
                others: set[str] = set()
            elif task.weight_rule == "upstream":
                others = self.upstream_of(task_id)
            else:
                others = self.downstream_of(task_id)
            own = task.priority_weight
            weights[task_id] = own + sum(self.task_dict[o].priority_weight for o in others)
        return weights

    def topological_order(self) -> list[str]:
        """Task ids, every task after its upstream tasks (ties in definition order)."""
        remaining = {t: set(task.upstream_task_ids) for t, task in self.task_dict.items()}
        order: list[str] = []
        while remaining:
            ready = [t for t, ups in remaining.items() if not ups]
            if not ready:  # pragma: no cover - cycles are refused when edges are added
                raise DagDefinitionError(f"DAG {self.dag_id!r} has a cycle")
            for t in ready:
                del remaining[t]
                order.append(t)
            for ups in remaining.values():
                ups.difference_update(ready)
        return order


def _reachable(start: str, neighbours: Callable[[str], Iterable[str]]) -> set[str]:
    seen: set[str] = set()
    stack = list(neighbours(start))
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(neighbours(node))
    return seen


def current_dag() -> DAG | None:
    return _current_dags[-1] if _current_dags else None


def _pick(explicit: T | None, default_args: Mapping[str, Any], name: str, fallback: T) -> T:
    if explicit is not None:
        return explicit
    value = default_args.get(name)
    return fallback if value is None else value


class BaseTask:
    """One node of a DAG. Subclasses implement :meth:`command`.

    Keyword arguments left as ``None`` take the DAG's ``default_args`` and then the
    built-in defaults: ``retries=0``, ``retry_delay=300`` seconds, ``pool="default_pool"``,
    ``pool_slots=1``, ``queue=None``, ``priority_weight=1``, ``weight_rule="downstream"``,
    ``trigger_rule="all_success"``, no ``execution_timeout``, ``executor=None``.

    ``executor`` picks one of the executors of ``[core] executor`` by its alias, class name
    or import path (None: the first, the default). The DAG does not know the configuration:
    the name is checked against it when a run is created and by the scheduler (see
    :mod:`airdask.executors.names`).

    Callbacks are called in the scheduler process with a context dict (``dag_id``,
    ``task_id``, ``run_id``, ``try_number``, ``state``, ``reason``, ``conf``); an exception
    they raise is logged and never changes the task's state.
    """

    def __init__(
        self,
        task_id: str,
        *,
        dag: DAG | None = None,
        retries: int | None = None,
        retry_delay: float | timedelta | None = None,
        pool: str | None = None,
        pool_slots: int | None = None,
        queue: str | None = None,
        priority_weight: int | None = None,
        weight_rule: str | None = None,
        executor_config: Mapping[str, Any] | None = None,
        execution_timeout: float | timedelta | None = None,
        trigger_rule: str | None = None,
        on_success_callback: Callback | None = None,
        on_failure_callback: Callback | None = None,
        executor: str | None = None,
    ) -> None:
        dag = dag or current_dag()
        if dag is None:
            raise DagDefinitionError(
                f"task {task_id!r} has no DAG: create it inside `with DAG(...)` or pass dag="
            )
        where = f"DAG {dag.dag_id!r}, task {task_id!r}"
        if not task_id or not all(c.isalnum() or c in "_-." for c in task_id):
            raise DagDefinitionError(f"{where}: use letters, digits, '_', '-' and '.' in task ids")
        d = dag.default_args
        self.task_id = task_id
        self.dag = dag
        self.retries = int(_pick(retries, d, "retries", 0))
        default_delay: float | timedelta = 300.0
        delay = _pick(retry_delay, d, "retry_delay", default_delay)
        self.retry_delay = _seconds(delay, f"{where}: retry_delay")
        self.pool = str(_pick(pool, d, "pool", DEFAULT_POOL))
        self.pool_slots = int(_pick(pool_slots, d, "pool_slots", 1))
        self.queue: str | None = _pick(queue, d, "queue", None)
        self.priority_weight = int(_pick(priority_weight, d, "priority_weight", 1))
        self.weight_rule = str(_pick(weight_rule, d, "weight_rule", "downstream"))
        self.trigger_rule = str(_pick(trigger_rule, d, "trigger_rule", "all_success"))
        timeout: float | timedelta | None = _pick(execution_timeout, d, "execution_timeout", None)
        self.execution_timeout = _seconds(timeout, f"{where}: execution_timeout")
        self.executor_config: dict[str, Any] = dict(
            _pick(executor_config, d, "executor_config", {})
        )
        self.on_success_callback: Callback | None = _pick(
            on_success_callback, d, "on_success_callback", None
        )
        self.on_failure_callback: Callback | None = _pick(
            on_failure_callback, d, "on_failure_callback", None
        )
        self.executor: str | None = _pick(executor, d, "executor", None)
        self.upstream_task_ids: set[str] = set()
        self.downstream_task_ids: set[str] = set()
        #: One element per task instance when the task is mapped over a literal list
        #: (:meth:`expand`); None for a task that runs once.
        self.map_over: list[Any] | None = None
        #: The upstream task whose result (a list) the task is mapped over, known only when
        #: that task has succeeded (``expand(op_args=extract.output)``); None otherwise.
        self.map_from: str | None = None
        self._check(where)
        dag.add_task(self)

    def _check(self, where: str) -> None:
        if self.retries < 0:
            raise DagDefinitionError(f"{where}: retries must be >= 0, got {self.retries}")
        if self.pool_slots < 1:
            raise DagDefinitionError(f"{where}: pool_slots must be >= 1, got {self.pool_slots}")
        if not self.pool:
            raise DagDefinitionError(f"{where}: pool must not be empty")
        if self.trigger_rule not in TRIGGER_RULES:
            raise DagDefinitionError(
                f"{where}: unknown trigger_rule {self.trigger_rule!r} "
                f"(known: {', '.join(TRIGGER_RULES)})"
            )
        if self.weight_rule not in WEIGHT_RULES:
            raise DagDefinitionError(
                f"{where}: unknown weight_rule {self.weight_rule!r} "
                f"(known: {', '.join(WEIGHT_RULES)})"
            )
        if self.executor is not None and (
            not isinstance(self.executor, str) or not self.executor.strip()
        ):
            raise DagDefinitionError(
                f"{where}: executor must be an executor's alias, class name or import path "
                f"(a non-empty string), got {self.executor!r}"
            )
        if self.execution_timeout == 0:
            raise DagDefinitionError(f"{where}: execution_timeout must be positive")
        try:
            json.dumps(self.executor_config)
        except (TypeError, ValueError) as exc:
            raise DagDefinitionError(
                f"{where}: executor_config must be JSON-serialisable (it is stored): {exc}"
            ) from None
        for name in ("on_success_callback", "on_failure_callback"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise DagDefinitionError(f"{where}: {name} must be callable, got {value!r}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.dag.dag_id}.{self.task_id}>"

    #: Whether the task's return value is kept (and may be passed to downstream tasks).
    keeps_result = False
    #: The attributes rendered as Jinja templates from the run context.
    template_fields: tuple[str, ...] = ()

    def command(self) -> Command:
        """The command an executor runs for this task, outside any run (no templates
        rendered, no context); the scheduler calls :meth:`command_in_run`."""
        raise NotImplementedError

    def command_in_run(self, context: Mapping[str, Any], results: Mapping[str, Any]) -> Command:
        """The command of one attempt: templates rendered from ``context`` (the attempt's
        :func:`~airdask.context.run_context`), upstream ``results`` ({task_id: value}, for
        the ids :meth:`result_sources` names) put in place.

        :raises airdask.context.TemplateError: a template that cannot be rendered.
        The default is :meth:`command`, for subclasses that know nothing of runs."""
        return self.command()

    @property
    def output(self) -> TaskOutput:
        """This task's return value, as an argument of a downstream task."""
        return TaskOutput(self)

    def _where(self) -> str:
        return f"task {self.task_id!r} of DAG {self.dag.dag_id!r}"

    # ---- mapping -----------------------------------------------------------------------

    @property
    def is_mapped(self) -> bool:
        return self.map_over is not None or self.map_from is not None

    def _set_mapping(self, name: str, values: object) -> None:
        where = f"DAG {self.dag.dag_id!r}, task {self.task_id!r}"
        if self.is_mapped:
            raise DagDefinitionError(f"{where}: expand() may be called once")
        if isinstance(values, (BaseTask, TaskOutput)):
            upstream = values if isinstance(values, BaseTask) else values.task
            if not upstream.keeps_result:
                raise DagDefinitionError(
                    f"{where}: expand({name}=...) maps over the result of {upstream!r}, which "
                    "keeps none (only a PythonTask's return value is kept)"
                )
            upstream.set_downstream(self)
            self.map_from = upstream.task_id
            return
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
            raise DagDefinitionError(
                f"{where}: expand({name}=...) takes a list (one element per task instance) "
                f"or an upstream task's output, got {type(values).__name__}"
            )
        self.map_over = list(values)

    def result_sources(self) -> set[str]:
        """Upstream task ids whose results this task's command takes."""
        return {self.map_from} if self.map_from is not None else set()

    def map_element(self, context: Mapping[str, Any], results: Mapping[str, Any]) -> Any:
        """The element of a mapped task's list that the attempt of ``context`` runs."""
        index = int(context["map_index"])
        values = self.map_over if self.map_from is None else results[self.map_from]
        if not isinstance(values, (list, tuple)) or not 0 <= index < len(values):
            raise IndexError(
                f"{self._where()}: map_index {index} is not an element of the mapped list"
            )
        return values[index]

    def command_at(self, map_index: int) -> Command:
        """The command of one task instance outside a run: :meth:`command` for a task that
        is not mapped, else the command for element ``map_index`` of the literal list."""
        if self.map_from is not None:
            raise CommandError(
                f"{self._where()} is mapped over the result of {self.map_from!r}: its "
                "commands are built in a run"
            )
        if self.map_over is None:
            return self.command()
        if not 0 <= map_index < len(self.map_over):
            raise IndexError(
                f"map_index {map_index} is outside the {len(self.map_over)} mapped elements"
            )
        return self.mapped_command(self.map_over[map_index])

    def mapped_command(self, element: Any) -> Command:
        """The command for one element of the mapped list (subclasses that map)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be mapped")

    def executor_config_for_run(self) -> dict[str, Any]:
        """``executor_config`` as handed to the executor: ``execution_timeout`` included as
        float seconds (``airdask.executors.common.execution_timeout`` reads it)."""
        config = dict(self.executor_config)
        if self.execution_timeout is not None:
            config["execution_timeout"] = self.execution_timeout
        return config

    # ---- dependencies ------------------------------------------------------------------

    def set_downstream(self, other: TaskOrList) -> None:
        for task in _as_list(other):
            self._add_edge(self, task)

    def set_upstream(self, other: TaskOrList) -> None:
        for task in _as_list(other):
            self._add_edge(task, self)

    @staticmethod
    def _add_edge(up: BaseTask, down: BaseTask) -> None:
        if up.dag is not down.dag:
            raise DagDefinitionError(
                f"cannot link {up!r} to {down!r}: tasks of different DAGs "
                f"({up.dag.dag_id!r}, {down.dag.dag_id!r})"
            )
        if up is down or up.task_id in up.dag.downstream_of(down.task_id):
            raise DagDefinitionError(
                f"DAG {up.dag.dag_id!r}: {up.task_id} >> {down.task_id} would make a cycle"
            )
        up.downstream_task_ids.add(down.task_id)
        down.upstream_task_ids.add(up.task_id)

    def __rshift__(self, other: TaskOrList) -> TaskOrList:
        self.set_downstream(other)
        return other

    def __lshift__(self, other: TaskOrList) -> TaskOrList:
        self.set_upstream(other)
        return other

    def __rrshift__(self, other: TaskOrList) -> BaseTask:
        self.set_upstream(other)
        return self

    def __rlshift__(self, other: TaskOrList) -> BaseTask:
        self.set_downstream(other)
        return self


def _as_list(other: TaskOrList) -> list[BaseTask]:
    items = [other] if isinstance(other, BaseTask) else list(other)
    for item in items:
        if not isinstance(item, BaseTask):
            raise DagDefinitionError(f"dependencies link tasks, got {item!r}")
    return items


class TaskOutput:
    """A task's return value, standing in for it among a downstream task's arguments
    (Airflow's XComArg). ``task.output`` makes one; passing the task itself is the same."""

    def __init__(self, task: BaseTask) -> None:
        self.task = task

    def __repr__(self) -> str:
        return f"<output of {self.task.task_id}>"


def _refs(value: Any) -> Iterable[BaseTask]:
    """The tasks whose results ``value`` (an argument, maybe a list or dict) refers to."""
    if isinstance(value, BaseTask):
        yield value
    elif isinstance(value, TaskOutput):
        yield value.task
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _refs(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _refs(item)


def _resolve(value: Any, results: Mapping[str, Any]) -> Any:
    """``value`` with every task reference replaced by that task's result."""
    if isinstance(value, BaseTask):
        return results[value.task_id]
    if isinstance(value, TaskOutput):
        return results[value.task.task_id]
    if isinstance(value, list):
        return [_resolve(item, results) for item in value]
    if isinstance(value, tuple):
        return tuple(_resolve(item, results) for item in value)
    if isinstance(value, dict):
        return {k: _resolve(item, results) for k, item in value.items()}
    return value


def _argv_in_run(
    command: Command, context: Mapping[str, Any], field: Callable[[int], str], where: str
) -> Command:
    """An argv command with each argument rendered, and the context's environment."""
    if not isinstance(command, list):  # a subclass that builds something else
        return command
    argv = [
        render_template(arg, context, field=field(i), where=where) for i, arg in enumerate(command)
    ]
    files = getattr(command, "files", None)
    return ArgvInRun(argv, env=context_env_extra(context), files=files)


class BashTask(BaseTask):
    """Runs ``bash -c SCRIPT``; success is exit code 0. ``bash_command`` is a Jinja
    template rendered from the run context when the attempt is queued
    (``"load --day {{ ds }} --n {{ params.n }}"``)."""

    template_fields = ("bash_command",)

    def __init__(self, task_id: str, bash_command: str, **kwargs: Any) -> None:
        if not isinstance(bash_command, str) or not bash_command.strip():
            raise DagDefinitionError(f"task {task_id!r}: bash_command must be a non-empty string")
        self.bash_command = bash_command
        super().__init__(task_id, **kwargs)

    def command(self) -> Command:
        return ["bash", "-c", self.bash_command]

    def command_in_run(self, context: Mapping[str, Any], results: Mapping[str, Any]) -> Command:
        command = _argv_in_run(self.command(), context, lambda i: "bash_command", self._where())
        if not self.is_mapped:
            return command
        element = self.map_element(context, results)
        return _extended(command, [self.task_id, *_as_argv(element)])  # $0, then $1 ...

    def expand(self, *, args: MapSource) -> BashTask:
        """One task instance per element of ``args``; the script gets the element as ``$1``
        (a list or tuple element as ``$1 $2 ...``), never pasted into the script text::

            BashTask("load", 'load --file "$1"').expand(args=["a.csv", "b.csv"])

        ``args`` may be an upstream PythonTask (or its ``.output``) that returns the list:
        the instances are then made when it succeeds."""
        self._set_mapping("args", args)
        return self

    def mapped_command(self, element: Any) -> Command:
        return ["bash", "-c", self.bash_command, self.task_id, *_as_argv(element)]


class CommandTask(BaseTask):
    """Runs an argv list without a shell; each argument is a Jinja template (see BashTask)."""

    template_fields = ("argv",)

    def __init__(self, task_id: str, argv: Sequence[str], **kwargs: Any) -> None:
        if isinstance(argv, str) or not argv or not all(isinstance(a, str) for a in argv):
            raise DagDefinitionError(
                f"task {task_id!r}: argv must be a non-empty list of strings, got {argv!r}"
            )
        self.argv = list(argv)
        super().__init__(task_id, **kwargs)

    def command(self) -> Command:
        return list(self.argv)

    def command_in_run(self, context: Mapping[str, Any], results: Mapping[str, Any]) -> Command:
        command = _argv_in_run(self.command(), context, lambda i: f"argv[{i}]", self._where())
        if not self.is_mapped:
            return command
        return _extended(command, _as_argv(self.map_element(context, results)))

    def expand(self, *, args: MapSource) -> CommandTask:
        """One task instance per element of ``args``, appended to the argv (a list or tuple
        element as several arguments)."""
        self._set_mapping("args", args)
        return self

    def mapped_command(self, element: Any) -> Command:
        return [*self.argv, *_as_argv(element)]


def _as_argv(element: Any) -> list[str]:
    items = element if isinstance(element, (list, tuple)) else [element]
    return [str(item) for item in items]


def _extended(command: Command, extra: list[str]) -> Command:
    """An argv command with ``extra`` arguments appended (not rendered: they are data)."""
    if isinstance(command, ArgvInRun):
        return ArgvInRun([*command, *extra], env=command.env, files=command.files)
    if isinstance(command, list):
        return [*command, *extra]
    return command


class PythonTask(BaseTask):
    """Calls ``python_callable(*op_args, **op_kwargs)`` on a worker; raising fails the try.

    The return value is kept (up to ``[core] max_result_bytes``). An upstream task (or its
    ``.output``) among ``op_args``/``op_kwargs`` (also inside lists and dicts) stands for
    that task's return value and makes it upstream of this one. String arguments are Jinja
    templates. A callable with a ``context`` parameter gets the run context; one with
    ``**kwargs`` gets its keys as keyword arguments (see :func:`airdask.context.call_kwargs`).
    """

    keeps_result = True
    template_fields = ("op_args", "op_kwargs")

    def __init__(
        self,
        task_id: str,
        python_callable: Callable[..., Any],
        *,
        op_args: Sequence[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not callable(python_callable):
            raise DagDefinitionError(
                f"task {task_id!r}: python_callable must be callable, got {python_callable!r}"
            )
        self.python_callable = python_callable
        #: which argument :meth:`expand` maps over: "op_args" or "op_kwargs"
        self._map_kind = "op_args"
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        super().__init__(task_id, **kwargs)
        self._sources: set[str] = set()
        for upstream in _refs([self.op_args, self.op_kwargs]):
            if not upstream.keeps_result:
                raise DagDefinitionError(
                    f"{self._where()}: takes the result of {upstream!r}, which keeps none "
                    "(only a PythonTask's return value is kept)"
                )
            upstream.set_downstream(self)
            self._sources.add(upstream.task_id)

    def result_sources(self) -> set[str]:
        return set(self._sources) | super().result_sources()

    def command(self) -> Command:
        if self._sources:
            raise CommandError(
                f"{self._where()} takes the results of {', '.join(sorted(self._sources))}: "
                "its command is built for a run (command_in_run)"
            )
        return PythonCommand(self.python_callable, *self.op_args, **self.op_kwargs)

    def command_in_run(self, context: Mapping[str, Any], results: Mapping[str, Any]) -> Command:
        where = self._where()
        args = [
            _resolve(_render_arg(a, context, f"op_args[{i}]", where), results)
            for i, a in enumerate(self.op_args)
        ]
        kwargs = {
            k: _resolve(_render_arg(v, context, f"op_kwargs[{k!r}]", where), results)
            for k, v in self.op_kwargs.items()
        }
        if self.is_mapped:  # the element is data: neither rendered nor resolved
            element = self.map_element(context, results)
            if self._map_kind == "op_kwargs":
                if not isinstance(element, Mapping):
                    raise ValueError(
                        f"{where}: expand(op_kwargs=...) needs dicts, element "
                        f"{context['map_index']} is {type(element).__name__}"
                    )
                kwargs.update(element)
            else:
                args.extend(list(element) if isinstance(element, (list, tuple)) else [element])
        command = PythonCommand(
            self.python_callable, *args, **call_kwargs(self.python_callable, context, kwargs)
        )
        command.header = f"[airdask] calling {command.name}"
        return command

    def expand(
        self,
        *,
        op_args: MapSource | None = None,
        op_kwargs: Sequence[Mapping[str, Any]] | BaseTask | TaskOutput | None = None,
    ) -> PythonTask:
        """One task instance per element (Airflow's ``expand``), given one of:

        * ``op_args``: each element is one instance's positional arguments, after the
          task's own ``op_args``: a list or tuple element is several arguments, any other
          value is one (``expand(op_args=[1, 2, 3])`` calls ``f(1)``, ``f(2)``, ``f(3)``);
        * ``op_kwargs``: each element is a dict of keyword arguments, over the task's own.

        Either may be an upstream PythonTask (or its ``.output``) whose return value is the
        list: the instances are made when that task succeeds (Airflow's dynamic task
        mapping). An empty list is allowed: the task is then skipped, as in Airflow.
        """
        where = f"DAG {self.dag.dag_id!r}, task {self.task_id!r}"
        if (op_args is None) == (op_kwargs is None):
            raise DagDefinitionError(f"{where}: expand() takes one of op_args= or op_kwargs=")
        if op_args is not None:
            self._set_mapping("op_args", op_args)
            self._map_kind = "op_args"
        else:
            self._set_mapping("op_kwargs", op_kwargs)
            self._map_kind = "op_kwargs"
            bad = [e for e in self.map_over or [] if not isinstance(e, Mapping)]
            if bad:
                self.map_over = None
                raise DagDefinitionError(
                    f"{where}: expand(op_kwargs=...) takes a list of dicts, got an element "
                    f"{bad[0]!r}"
                )
        return self

    def mapped_command(self, element: Any) -> Command:
        if self._map_kind == "op_kwargs":
            return PythonCommand(
                self.python_callable, *self.op_args, **{**self.op_kwargs, **element}
            )
        extra = list(element) if isinstance(element, (list, tuple)) else [element]
        return PythonCommand(self.python_callable, *self.op_args, *extra, **self.op_kwargs)


def _render_arg(value: Any, context: Mapping[str, Any], field: str, where: str) -> Any:
    if isinstance(value, str):
        return render_template(value, context, field=field, where=where)
    return value


def chain(*tasks: TaskOrList) -> None:
    """``chain(a, [b, c], d)`` is ``a >> [b, c] >> d``."""
    for i in range(1, len(tasks)):
        for task in _as_list(tasks[i - 1]):
            task.set_downstream(tasks[i])


__all__ = [
    "DAG",
    "TRIGGER_RULES",
    "BaseTask",
    "BashTask",
    "CommandTask",
    "DagDefinitionError",
    "Param",
    "PythonTask",
    "TaskOutput",
    "chain",
]
