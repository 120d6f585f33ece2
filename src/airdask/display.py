"""Rich HTML for notebooks, as ``distributed.Client`` has: pure functions of plain data.

An executor or a DAG run gets its ``_repr_html_`` by gathering its data and calling one of
these; nothing here touches Dask or the database. Every value is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: Airflow's colours for task instance states, so pages read like Airflow's UI.
STATE_COLORS: dict[str, str] = {
    "success": "#008000",
    "running": "#32cd32",
    "queued": "#808080",
    "scheduled": "#d2b48c",
    "up_for_retry": "#ffd700",
    "up_for_reschedule": "#40e0d0",
    "failed": "#ff0000",
    "upstream_failed": "#ffa500",
    "skipped": "#ff69b4",
    "removed": "#d3d3d3",
    "restarting": "#ee82ee",
    "deferred": "#9370db",
    "none": "#e0e0e0",
}
#: The order of states on the chart: work ahead, work under way, outcomes.
STATE_ORDER = (
    "none",
    "scheduled",
    "queued",
    "running",
    "up_for_retry",
    "up_for_reschedule",
    "deferred",
    "restarting",
    "success",
    "failed",
    "upstream_failed",
    "skipped",
    "removed",
)

_TABLE_STYLE = "border-collapse:collapse;text-align:left;font-size:90%"
_CELL = "padding:2px 8px;border-bottom:1px solid #ddd"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def state_badge(state: str | None) -> str:
    """A state name on its Airflow colour."""
    name = state or "none"
    color = STATE_COLORS.get(name, "#000000")
    text = "#fff" if name in ("success", "failed", "queued", "deferred") else "#000"
    style = f"background:{color};color:{text};padding:0 6px;border-radius:3px"
    return f'<span style="{style}">{_e(name)}</span>'


def table_html(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, state_column: str | None = None
) -> str:
    """An HTML table; cells of ``state_column`` are shown as :func:`state_badge`."""
    state_at = headers.index(state_column) if state_column in headers else -1
    head = "".join(f'<th style="{_CELL}">{_e(h)}</th>' for h in headers)
    body = []
    for row in rows:
        cells = [
            state_badge(v) if i == state_at else _e(v)
            for i, v in enumerate(row)  # a state cell is escaped by state_badge
        ]
        body.append("<tr>" + "".join(f'<td style="{_CELL}">{c}</td>' for c in cells) + "</tr>")
    return f'<table style="{_TABLE_STYLE}"><tr>{head}</tr>{"".join(body)}</table>'


def counts_html(counts: Mapping[str, int]) -> str:
    """``state: n`` badges in Airflow's state order (unknown states last)."""
    order = [s for s in STATE_ORDER if counts.get(s)] + sorted(
        s for s in counts if s not in STATE_ORDER and counts[s]
    )
    if not order:
        return "<i>none</i>"
    return " ".join(f"{state_badge(s)}&nbsp;{int(counts[s])}" for s in order)


def _link(url: str | None) -> str:
    if not url:
        return "<i>none</i>"
    return f'<a href="{_e(url)}" target="_blank">{_e(url)}</a>'


def executor_html(
    *,
    name: str,
    status: str,
    dashboard_link: str | None = None,
    scheduler_address: str | None = None,
    workers: int | None = None,
    resources: Mapping[str, float] | None = None,
    counts: Mapping[str, int] | None = None,
) -> str:
    """An executor: status, dashboard link, cluster, pools offered as worker resources, and
    its attempts by state (e.g. ``{"queued": 2, "running": 1}``)."""
    rows = [("status", _e(status)), ("dashboard", _link(dashboard_link))]
    if scheduler_address:
        rows.append(("scheduler", _e(scheduler_address)))
    if workers is not None:
        rows.append(("workers", _e(workers)))
    if resources is not None:
        offered = ", ".join(f"{_e(k)}={v:g}" for k, v in sorted(resources.items()))
        rows.append(("pool resources", offered or "<i>none</i>"))
    rows.append(("attempts", counts_html(counts or {})))
    body = "".join(
        f'<tr><th style="{_CELL}">{k}</th><td style="{_CELL}">{v}</td></tr>' for k, v in rows
    )
    return f'<div><b>{_e(name)}</b><table style="{_TABLE_STYLE}">{body}</table></div>'


def dag_run_html(
    *,
    dag_id: str,
    run_id: str,
    state: str | None,
    tasks: Sequence[Mapping[str, Any]],
    dashboard_link: str | None = None,
) -> str:
    """A DAG run: its state, counts by state, dashboard link, and one row per task instance
    (mappings with ``task_id``, ``state``, ``try_number``, ``executor``, ``duration``,
    ``hostname``, ``reason``; missing keys show empty)."""
    counts: dict[str, int] = {}
    for ti in tasks:
        key = ti.get("state") or "none"
        counts[key] = counts.get(key, 0) + 1
    columns = ("task_id", "state", "try_number", "executor", "duration", "hostname", "reason")

    def cell(ti: Mapping[str, Any], column: str) -> Any:
        value = ti.get(column)
        if column == "duration" and isinstance(value, (int, float)):
            return f"{value:.2f} s"
        return value

    table = table_html(
        ["task", "state", "try", "executor", "duration", "host", "reason"],
        ([cell(ti, c) for c in columns] for ti in tasks),
        state_column="state",
    )
    return (
        f"<div><b>DAG run {_e(dag_id)} / {_e(run_id)}</b> {state_badge(state)}"
        f"<div>{counts_html(counts)}</div>"
        f"<div>dashboard: {_link(dashboard_link)}</div>{table}</div>"
    )
