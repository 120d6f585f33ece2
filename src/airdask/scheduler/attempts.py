"""The command of one attempt, built when it is queued: the run context, the task's
templates rendered from it, and the upstream results it takes.

Everything the worker needs travels inside the command (workers have no database): the
context and the results are read here, in the scheduler, and pickled into a callable's
arguments or put into an argv and its environment.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from airdask.commands import Command, PythonCommand
from airdask.context import TemplateError, run_context
from airdask.dag import DAG
from airdask.params import ParamError
from airdask.scheduler.results import MissingResultError, results_for
from airdask.store.models import DagRun, TaskInstance


class AttemptError(ValueError):
    """The attempt's command cannot be built; the message is the task's failure reason."""


class AttemptCommands:
    """Builds attempts' commands; caches what one scheduler pass reads more than once.

    :param max_result_bytes: ``[core] max_result_bytes``, the cap of a kept return value.
    """

    def __init__(self, *, max_result_bytes: int) -> None:
        self.max_result_bytes = max_result_bytes
        self._runs: dict[tuple[str, str], dict[str, Any]] = {}
        self._results: dict[tuple[str, str, str], Any] = {}

    def new_pass(self) -> None:
        """Forget what was cached (a run's conf and results do not change under a pass)."""
        self._runs.clear()
        self._results.clear()

    def _run(self, session: Session, dag: DAG, ti: TaskInstance) -> dict[str, Any]:
        """The run's part of the context (the same for each of its attempts), cached."""
        key = (ti.dag_id, ti.run_id)
        found = self._runs.get(key)
        if found is None:
            run = session.get(DagRun, key)
            if run is None:
                raise AttemptError(f"run {ti.run_id!r} of DAG {ti.dag_id!r} is gone")
            try:
                params = dag.resolve_params(run.conf)
            except ParamError as exc:  # the DAG's params changed since the trigger
                raise AttemptError(f"the run's conf no longer fits the DAG: {exc}") from None
            found = self._runs[key] = run_context(
                dag_id=ti.dag_id,
                task_id="",
                run_id=ti.run_id,
                try_number=0,
                map_index=-1,
                logical_date=run.logical_date or run.queued_at,  # runs older than the column
                data_interval_start=run.data_interval_start,
                data_interval_end=run.data_interval_end,
                conf=run.conf,
                params=params,
            )
        return found

    def context(
        self, session: Session, dag: DAG, ti: TaskInstance, *, try_number: int | None = None
    ) -> dict[str, Any]:
        """The run context of ``ti``'s attempt ``try_number`` (default: the next one, as
        it is about to be queued)."""
        context = dict(self._run(session, dag, ti))
        context["task_id"] = ti.task_id
        context["try_number"] = ti.try_number + 1 if try_number is None else try_number
        context["map_index"] = ti.map_index
        return context

    def results(self, session: Session, ti: TaskInstance, task_ids: set[str]) -> dict[str, Any]:
        """The results of upstream ``task_ids`` in ``ti``'s run, by task id."""
        values: dict[str, Any] = {}
        for task_id in sorted(task_ids):
            key = (ti.dag_id, ti.run_id, task_id)
            if key not in self._results:
                try:
                    self._results[key] = results_for(session, (ti.dag_id, ti.run_id), task_id)
                except MissingResultError as exc:
                    raise AttemptError(f"cannot take the result of {task_id!r}: {exc}") from None
            values[task_id] = self._results[key]
        return values

    def build(
        self, session: Session, dag: DAG, ti: TaskInstance, *, try_number: int | None = None
    ) -> Command:
        """``ti``'s command for its next attempt (or ``try_number``).

        :raises AttemptError: a template that cannot be rendered, a missing upstream
            result, a conf that no longer fits; the message names what and where.
        """
        task = dag.get_task(ti.task_id)
        context = self.context(session, dag, ti, try_number=try_number)
        results = self.results(session, ti, task.result_sources())
        try:
            command = task.command_in_run(context, results)
        except TemplateError as exc:
            raise AttemptError(str(exc)) from None
        if isinstance(command, PythonCommand):
            command.max_result_bytes = self.max_result_bytes
        return command


__all__ = ["AttemptCommands", "AttemptError"]
