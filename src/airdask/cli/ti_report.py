"""What ``airdask run`` and ``airdask tasks states`` print about a run's task instances.

A run of a few tasks gets one row per task instance. A large one (more than
:data:`MAX_ROWS`) gets its counts by state and the rows of the task instances that did not
succeed (at most :data:`MAX_ROWS` of them), so that a 100,000-task run prints a screenful
in milliseconds; ``--all`` asks for every row. Both read through the ``(dag_id, run_id,
state)`` index and never load the successful task instances of a large run.
"""

from __future__ import annotations

from rich.console import RenderableType
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from airdask.cli.sched_common import STATE_STYLES, ti_table
from airdask.store import TaskInstance

#: Runs with more task instances than this are summarised (unless every row is asked for).
MAX_ROWS = 100


def state_counts(session: Session, dag_id: str, run_id: str) -> dict[str, int]:
    """Task instances of the run by state (``"none"`` for no state yet)."""
    rows = session.execute(
        select(TaskInstance.state, func.count())
        .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        .group_by(TaskInstance.state)
    )
    return {state or "none": int(n) for state, n in rows}


def counts_table(counts: dict[str, int], *, title: str) -> Table:
    table = Table(title=title)
    table.add_column("state")
    table.add_column("task instances", justify="right")
    for state, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        style = STATE_STYLES.get(state, "")
        table.add_row(f"[{style}]{state}[/]" if style else state, f"{n:,}")
    table.add_row("[bold]total[/]", f"[bold]{sum(counts.values()):,}[/]")
    return table


def run_report(
    session: Session,
    dag_id: str,
    run_id: str,
    *,
    title: str | None = None,
    all_rows: bool = False,
    max_rows: int = MAX_ROWS,
) -> list[RenderableType]:
    """The tables to print for a run (see the module docstring)."""
    title = title or f"{dag_id} / {run_id}"
    counts = state_counts(session, dag_id, run_id)
    total = sum(counts.values())
    if all_rows or total <= max_rows:
        return [ti_table(session, dag_id, run_id, title=title)]
    shown: list[RenderableType] = [counts_table(counts, title=title)]
    others = total - counts.get("success", 0)
    if others:
        not_success = TaskInstance.state.is_(None) | (TaskInstance.state != "success")
        rows = ti_table(
            session,
            dag_id,
            run_id,
            title=f"task instances not successful ({min(others, max_rows):,} of {others:,})",
            where=not_success,
            limit=max_rows,
        )
        shown.append(rows)
    shown.append(f"{total:,} task instances; --all lists every one")
    return shown
