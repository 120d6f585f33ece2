"""``airdask celery worker`` and ``airdask celery inspect`` (CeleryExecutor's CLI commands).

A worker reads ``[celery]`` only: with the broker as result backend (the default for Redis)
it needs no database credentials, no DAG files, nothing of the scheduler's.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from airdask.executors.celery.app import LOG_DIR_ENV, TASK_NAME, make_app
from airdask.executors.celery.executor import CeleryConnectionError, check_broker
from airdask.executors.celery.settings import CeleryOptions, celery_settings
from airdask.executors.celery.worker import run_worker


def _settings() -> CeleryOptions:
    from airdask.config import ConfigError, load_config

    try:
        return celery_settings(load_config())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("celery")
def celery_group() -> None:
    """Celery workers behind CeleryExecutor: start one, see what they run."""


@celery_group.command("worker")
@click.option(
    "-q",
    "--queues",
    help="Comma-separated Celery queues to consume (default: [celery] default_queue).",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    help="Pool processes (default: [celery] worker_concurrency).",
)
@click.option("-n", "--hostname", help="Worker name (default: airdask@<host>-<pid>).")
@click.option(
    "-l",
    "--loglevel",
    default="INFO",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="The worker's log level.",
)
@click.option(
    "--without-mingle",
    is_flag=True,
    help="Do not ask the other workers at start-up which tasks were revoked (faster start).",
)
def celery_worker(
    queues: str | None,
    concurrency: int | None,
    hostname: str | None,
    loglevel: str,
    without_mingle: bool,
) -> None:
    """Start a Celery worker that runs airdask attempts (prefork pool, one process each)."""
    settings = _settings()
    app = make_app(settings)
    try:
        check_broker(app, settings.celery.broker_url)
    except CeleryConnectionError as exc:
        raise click.ClickException(str(exc)) from None
    names = [q.strip() for q in (queues or settings.celery.default_queue).split(",") if q.strip()]
    if not names:
        raise click.BadParameter("no queue named", param_hint="--queues")
    log_dir = tempfile.mkdtemp(prefix="airdask-celery-logs-")
    os.environ[LOG_DIR_ENV] = log_dir  # the pool processes inherit it
    try:
        code = run_worker(
            app,
            queues=names,
            concurrency=concurrency or settings.celery.worker_concurrency,
            hostname=hostname or f"airdask@{socket.gethostname()}-{os.getpid()}",
            loglevel=loglevel.upper(),
            without_mingle=without_mingle,
        )
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    if code:
        raise SystemExit(code)


@celery_group.command("inspect")
@click.option(
    "--timeout", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
    help="Seconds to wait for the workers' answers.",
)  # fmt: skip
def celery_inspect(timeout: float) -> None:
    """The workers that answer: their queues, pool size and the attempts they run."""
    settings = _settings()
    app = make_app(settings)
    try:
        check_broker(app, settings.celery.broker_url)
        inspect = app.control.inspect(timeout=timeout)
        stats = inspect.stats() or {}
        queues = inspect.active_queues() or {}
        active = inspect.active() or {}
    except CeleryConnectionError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        app.close()
    console = Console()
    if not stats:
        console.print("no Celery worker answered")
        return
    table = Table("worker", "queues", "processes", "running")
    for name in sorted(stats):
        pool = stats[name].get("pool") or {}
        table.add_row(
            name,
            ", ".join(sorted(q.get("name", "?") for q in queues.get(name, []))),
            str(pool.get("max-concurrency", "?")),
            "\n".join(_label(task) for task in active.get(name, [])) or "-",
        )
    console.print(table)


def _label(task: dict[str, Any]) -> str:
    if task.get("name") != TASK_NAME:
        return f"{task.get('name')} {task.get('id')}"
    args = task.get("args") or [{}]
    message = args[0] if isinstance(args, (list, tuple)) and args else {}
    label = message.get("label") if isinstance(message, dict) else None
    return f"{label or '?'} ({task.get('id')})"
