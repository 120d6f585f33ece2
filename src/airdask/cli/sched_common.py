"""CLI helpers shared by the scheduler-side commands: resolving DAGs, building executors,
and rendering task instance tables."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.table import Table
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from airdask.cli.common import CliContext, CliError, describe_error
from airdask.config import Config
from airdask.dag import DAG
from airdask.dagbag import DagBag
from airdask.executors import BaseExecutor, ExecutorLoadError
from airdask.executors.base import ClusterUnreachableError
from airdask.executors.loader import configured_names, load_executors
from airdask.executors.names import ExecutorName
from airdask.masking import redact
from airdask.scheduler.executors import ExecutorSet, check_dag_executors
from airdask.scheduler.jobs import live_schedulers, sqlite_refusal
from airdask.scheduler.runs import (
    RunError,
    check_conf,
    check_dag_pools,
    parse_conf,
    pool_slots,
)
from airdask.store import Store, TaskInstance, init_db
from airdask.store.queries import pool_resources_of

log = logging.getLogger(__name__)

STATE_STYLES = {
    "success": "green",
    "failed": "red",
    "upstream_failed": "dark_orange",
    "skipped": "magenta",
    "up_for_retry": "yellow",
    "running": "cyan",
    "queued": "blue",
    "scheduled": "blue",
    "removed": "dim",
}


def conf_or_error(text: str | None) -> dict[str, Any] | None:
    try:
        return parse_conf(text)
    except RunError as exc:
        raise CliError(str(exc)) from None


def check_dag_conf(dag: DAG, conf: dict[str, Any] | None) -> None:
    """The conf against the DAG's params, before anything is written (one-line error)."""
    try:
        check_conf(dag, conf)
    except RunError as exc:
        raise CliError(str(exc)) from None


@contextlib.contextmanager
def _dagbag_warnings_silenced() -> Iterator[None]:
    """DagBag logs each import error as a warning; the commands that resolve one DAG report
    the error themselves, as their one line, so the warning would say it twice."""
    dagbag_log = logging.getLogger("airdask.dagbag")
    was = dagbag_log.disabled
    dagbag_log.disabled = True
    try:
        yield
    finally:
        dagbag_log.disabled = was


def resolve_dag(target: str, config: Config) -> tuple[DAG, str]:
    """A DAG file path (its only DAG, or the one named like the file) or a DAG id in
    ``[core] dags_folder``; returns the DAG and its file."""
    with _dagbag_warnings_silenced():
        return _resolve_dag(target, config)


def _resolve_dag(target: str, config: Config) -> tuple[DAG, str]:
    path = Path(target).expanduser()
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise CliError(f"no DAG file {target}")
        bag = DagBag.from_path(path)
        if bag.import_errors:
            raise CliError(f"cannot import {target}: {next(iter(bag.import_errors.values()))}")
        if not bag.dags:
            raise CliError(f"{target} defines no DAG")
        if len(bag.dags) > 1:
            named = bag.dags.get(path.stem)
            if named is None:
                ids = ", ".join(sorted(bag.dags))
                raise CliError(f"{target} defines several DAGs ({ids}): name one by its id")
            return named, bag.files[named.dag_id]
        dag = next(iter(bag.dags.values()))
        return dag, bag.files[dag.dag_id]
    folder = config.core.dags_folder
    bag = DagBag.from_path(folder)
    found = bag.get_dag(target)
    if found is None:
        known = ", ".join(sorted(bag.dags)) or "none"
        raise CliError(f"unknown DAG id {target!r} in {folder} (known: {known}){_import_hint(bag)}")
    return found, bag.files[found.dag_id]


def _import_hint(bag: DagBag) -> str:
    """Why the DAG may be missing: the one file that failed to import, or how many did."""
    if not bag.import_errors:
        return ""
    if len(bag.import_errors) == 1:
        path, error = next(iter(bag.import_errors.items()))
        return f"; {path} failed to import: {error}"
    return f"; {len(bag.import_errors)} files failed to import (`airdask dags list` shows them)"


def ready_store(ctx: CliContext) -> Store:
    """The store, with the schema created if it is missing (idempotent)."""
    store = ctx.store()
    try:
        init_db(store, default_pool_slots=ctx.config.core.default_pool_slots)
    except Exception as exc:
        url = store.engine.url.render_as_string(hide_password=True)
        raise CliError(f"cannot initialise the database {url}: {describe_error(exc)}") from None
    return store


def refuse_second_sqlite_scheduler(ctx: CliContext, store: Store) -> None:
    """A quick, early :class:`CliError` when another scheduler already runs on this SQLite
    database (the scheduler checks again, atomically, when it starts)."""
    if store.engine.dialect.name != "sqlite":
        return
    threshold = ctx.config.scheduler.scheduler_health_check_threshold
    with store.session() as session:
        others = live_schedulers(session, threshold=threshold)
        if others:
            raise CliError(sqlite_refusal(others[0]))


def check_pools(session: Session, dag: DAG) -> None:
    problems = check_dag_pools(dag, pool_slots(session))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CliError(problems[0] + more)


#: Executors ``--cluster`` gives its address to.
_DASK_CLASSES = ("DaskExecutor", "LocalDaskExecutor")


def executor_names(config: Config, name: str | None, cluster: str | None) -> list[ExecutorName]:
    """The executors ``--executor`` (else ``[core] executor``) lists; ``--cluster`` alone
    with no Dask executor configured means the DaskExecutor alone. Bad names are a
    :class:`CliError`."""
    try:
        names = configured_names(config, name)
    except ExecutorLoadError as exc:
        raise CliError(str(exc)) from None
    if cluster and not any(n.class_name in _DASK_CLASSES for n in names):
        if name:
            raise CliError(f"--cluster needs the DaskExecutor, not --executor {name}")
        names = configured_names(config, "DaskExecutor")
    return names


def check_executors(dag: DAG, names: list[ExecutorName]) -> None:
    """A :class:`CliError` when a task of ``dag`` names an executor not in ``names``."""
    problems = check_dag_executors(dag, names)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CliError(problems[0] + more)


def build_executors(
    config: Config, name: str | None, cluster: str | None, *, wait_for_cluster: float = 0.0
) -> ExecutorSet:
    """The executors ``--executor``/``--cluster`` ask for (``[core] executor`` otherwise),
    built and started; a bad name or an unreachable cluster is a :class:`CliError` (and
    the executors already started are terminated). An executor whose cluster or broker is
    unreachable is tried again for up to ``wait_for_cluster`` seconds first."""
    names = executor_names(config, name, cluster)
    kwargs_for: dict[str, dict[str, Any]] = {}
    if cluster:
        kwargs_for = {cls: {"cluster_address": cluster} for cls in _DASK_CLASSES}
    try:
        built = load_executors(
            names, config=config, worker_resources=pool_resources_of(config), kwargs_for=kwargs_for
        )
    except ExecutorLoadError as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:
        raise CliError(_start_error(",".join(map(str, names)), cluster, exc)) from None
    started: list[BaseExecutor] = []
    for _, executor in built:
        _quiet_distributed(executor)
        try:
            _start(executor, wait_for_cluster)
        except Exception as exc:
            for other in (executor, *started):
                with contextlib.suppress(Exception):
                    other.terminate()
            raise CliError(_start_error(type(executor).__name__, cluster, exc)) from None
        started.append(executor)
    return ExecutorSet(built, parallelism=config.core.parallelism)


#: Longest pause between two tries to start an executor whose cluster is unreachable.
START_RETRY_MAX_SECONDS = 10.0


def _start(executor: BaseExecutor, wait_for: float) -> None:
    """``executor.start()``, tried again with a growing pause while its cluster is
    unreachable, until ``wait_for`` seconds have passed."""
    deadline = time.monotonic() + wait_for
    pause = 1.0
    while True:
        try:
            executor.start()
            return
        except ClusterUnreachableError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            pause = min(pause, left)
            log.warning("%s; trying again in %.1f s (giving up in %.0f s)", exc, pause, left)
            time.sleep(pause)
            pause = min(pause * 2, START_RETRY_MAX_SECONDS)


def _quiet_distributed(executor: BaseExecutor) -> None:
    """Dask sets its own loggers to INFO when it is imported; in the CLI they follow ``-v``
    like airdask's, so `airdask run` shows its progress, not the cluster's chatter."""
    if "dask" not in type(executor).__module__:
        return
    import distributed  # noqa: F401  (its import is what sets the levels we override)

    level = max(logging.getLogger().getEffectiveLevel(), logging.DEBUG)
    for name in ("distributed", "dask"):
        logging.getLogger(name).setLevel(level)


def _start_error(name: str, cluster: str | None, exc: BaseException) -> str:
    if cluster:
        # The executor's own error repeats the address: describe the error it wraps.
        cause = exc.__cause__ or exc
        return f"cannot reach the Dask cluster at {cluster}: {describe_error(cause)}"
    return f"cannot start {name}: {describe_error(exc)}"


def ti_table(
    session: Session,
    dag_id: str,
    run_id: str,
    *,
    title: str | None = None,
    where: ColumnElement[bool] | None = None,
    limit: int | None = None,
) -> Table:
    """One row per task instance of the run (``where`` them, at most ``limit``)."""
    stmt = (
        select(TaskInstance)
        .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        .order_by(
            TaskInstance.start_date.is_(None),
            TaskInstance.start_date,
            TaskInstance.task_id,
            TaskInstance.map_index,
        )
    )
    if where is not None:
        stmt = stmt.where(where)
    tis = session.scalars(stmt.limit(limit)).all()
    table = Table(title=title or f"{dag_id} / {run_id}")
    table.add_column("task")
    table.add_column("state")
    table.add_column("tries", justify="right")
    table.add_column("executor")
    table.add_column("duration", justify="right")
    table.add_column("host")
    table.add_column("reason", overflow="fold")
    for ti in tis:
        state = ti.state or "none"
        style = STATE_STYLES.get(state, "")
        duration = f"{ti.duration:.2f}s" if ti.duration is not None else ""
        mapped = f"[{ti.map_index}]" if ti.map_index >= 0 else ""
        table.add_row(
            ti.task_id + mapped,
            f"[{style}]{state}[/]" if style else state,
            str(ti.try_number),
            ti.executor or "",
            duration,
            ti.hostname or "",
            redact(ti.reason or ""),
        )
    return table
