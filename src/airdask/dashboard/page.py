"""The airdask page of the Dask dashboard: a Bokeh document fed by the published summary.

Runs inside the Dask scheduler process and reads only what the airdask scheduler published
(:func:`airdask.dashboard.published.read_summary`); it never touches the metadata DB. The
``*_columns`` functions turn a summary into Bokeh column data and are pure, so the tests
check them without a browser.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from airdask.dashboard.published import read_summary
from airdask.display import STATE_COLORS, STATE_ORDER

#: Milliseconds between two looks at the published summary.
REFRESH_MS = 1000
#: A summary older than this many seconds is shown as stale (its scheduler may be gone).
STALE_AFTER = 30.0

#: Pool bars: slots running, queued and open.
POOL_PARTS = ("running", "queued", "open")
POOL_COLORS = ("#32cd32", "#808080", "#c6dbef")


def pool_columns(summary: dict[str, Any] | None) -> dict[str, list[Any]]:
    """One row per pool: name, slots, running, queued, open (negative when slots were
    lowered below what is in use), description; for the chart, each part as a share of
    the pool (``*_share``, 0..1) and a ``label`` such as ``"3/4 used"``."""
    pools = (summary or {}).get("pools") or []
    columns: dict[str, list[Any]] = {
        "name": [],
        "slots": [],
        "running": [],
        "queued": [],
        "open": [],
        "description": [],
        "running_share": [],
        "queued_share": [],
        "open_share": [],
        "label": [],
    }
    for pool in pools:
        values = {f: int(pool.get(f, 0)) for f in ("slots", "running", "queued", "open")}
        columns["name"].append(str(pool["name"]))
        for field, value in values.items():
            columns[field].append(value)
        columns["description"].append(str(pool.get("description") or ""))
        # Shares of the pool's own slots, so a 2-slot pool reads as well as a 128-slot one.
        slots = values["slots"]
        used = values["running"] + values["queued"]
        scale = max(slots, used, 1)
        columns["running_share"].append(values["running"] / scale)
        columns["queued_share"].append(values["queued"] / scale)
        columns["open_share"].append(max(values["open"], 0) / scale)
        columns["label"].append(f"{used}/{slots} used")
    return columns


def state_columns(summary: dict[str, Any] | None) -> dict[str, list[Any]]:
    """One row per state that has task instances, in :data:`STATE_ORDER` (unknown states
    last, alphabetically): state, count, color."""
    states: dict[str, int] = dict((summary or {}).get("states") or {})
    known = [s for s in STATE_ORDER if states.get(s)]
    unknown = sorted(s for s in states if s not in STATE_COLORS and states[s])
    order = known + unknown
    return {
        "state": order,
        "count": [int(states[s]) for s in order],
        "color": [STATE_COLORS.get(s, "#000000") for s in order],
    }


def _clock(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%H:%M:%S")
    except ValueError:
        return iso


def event_columns(summary: dict[str, Any] | None) -> dict[str, list[Any]]:
    """The last events, newest first: time (UTC, HH:MM:SS), event, task (``dag.task``),
    run, try, reason."""
    columns: dict[str, list[Any]] = {
        "time": [],
        "event": [],
        "task": [],
        "run": [],
        "try": [],
        "reason": [],
    }
    for event in (summary or {}).get("events") or []:
        dag_id, task_id = event.get("dag_id"), event.get("task_id")
        task = f"{dag_id}.{task_id}" if dag_id and task_id else (dag_id or "")
        columns["time"].append(_clock(event.get("dttm")))
        columns["event"].append(str(event.get("event") or ""))
        columns["task"].append(task)
        columns["run"].append(str(event.get("run_id") or ""))
        try_number = event.get("try_number")
        columns["try"].append("" if try_number is None else str(try_number))
        columns["reason"].append(str(event.get("reason") or ""))
    return columns


def live_columns(summary: dict[str, Any] | None) -> dict[str, list[Any]]:
    """Task instances in flight, newest queued first: task (``dag.task``), run, try, state,
    executor, pool, host."""
    columns: dict[str, list[Any]] = {
        "task": [],
        "run": [],
        "try": [],
        "state": [],
        "executor": [],
        "pool": [],
        "host": [],
    }
    for ti in (summary or {}).get("live") or []:
        columns["task"].append(f"{ti.get('dag_id')}.{ti.get('task_id')}")
        columns["run"].append(str(ti.get("run_id") or ""))
        columns["try"].append(str(ti.get("try_number") or ""))
        columns["state"].append(str(ti.get("state") or ""))
        columns["executor"].append(str(ti.get("executor") or ""))
        columns["pool"].append(str(ti.get("pool") or ""))
        columns["host"].append(str(ti.get("hostname") or ""))
    return columns


def header_html(summary: dict[str, Any] | None, *, now: datetime | None = None) -> str:
    """The line above the charts: when the summary was made, runs by state, or why there
    is nothing to show."""
    if summary is None:
        return (
            "<b>airdask</b>: no summary published yet. The airdask scheduler publishes one "
            "every few seconds while it runs against this Dask cluster."
        )
    now = now or datetime.now(timezone.utc)
    generated = summary.get("generated_at")
    age_text = ""
    stale = False
    if generated:
        try:
            age = (now - datetime.fromisoformat(generated)).total_seconds()
            stale = age > STALE_AFTER
            age_text = f"updated {_clock(generated)} UTC ({max(age, 0):.0f} s ago)"
        except ValueError:
            age_text = f"updated {html.escape(str(generated))}"
    runs = summary.get("runs") or {}
    run_text = ", ".join(f"{html.escape(str(k))}: {int(v)}" for k, v in sorted(runs.items()))
    total = sum(int(v) for v in (summary.get("states") or {}).values())
    parts = [
        "<b>airdask</b>",
        age_text,
        f"DAG runs: {run_text or 'none'}",
        f"task instances: {total}",
    ]
    text = " · ".join(p for p in parts if p)
    if stale:
        text += " · <b style='color:#c00'>stale: is the airdask scheduler still running?</b>"
    return text


#: A table column: its field and title, and its width in pixels where Bokeh's default
#: does not do.
Column = tuple[str, str] | tuple[str, str, int]


def _table(source: Any, columns: Sequence[Column], *, height: int) -> Any:
    """A full-width DataTable of ``source`` without the index column."""
    from bokeh.models.widgets import DataTable, TableColumn

    table_columns = []
    for field, title, *width in columns:
        column = TableColumn(field=field, title=title)
        if width:
            column.width = width[0]
        table_columns.append(column)
    return DataTable(
        source=source,
        columns=table_columns,
        index_position=None,
        height=height,
        sizing_mode="stretch_width",
    )


class AirdaskPage:
    """The Bokeh models of the page; :meth:`update` refreshes them from the scheduler."""

    def __init__(self, scheduler: Any) -> None:
        from bokeh.layouts import column, row
        from bokeh.models import (
            AdaptiveTicker,
            ColumnDataSource,
            FactorRange,
            HoverTool,
            Range1d,
        )
        from bokeh.models.widgets import Div
        from bokeh.plotting import figure

        self.scheduler = scheduler
        self._shown: tuple[Any, ...] | None = None
        self._generation = 0
        self.header = Div(text=header_html(None), sizing_mode="stretch_width")
        self.pools_source = ColumnDataSource(pool_columns(None))
        self.states_source = ColumnDataSource(state_columns(None))
        self.events_source = ColumnDataSource(event_columns(None))
        self.live_source = ColumnDataSource(live_columns(None))

        self._pool_names = FactorRange()
        self._state_names = FactorRange()
        self.pools_figure = figure(
            title="Pools: share of slots running, queued and open",
            y_range=self._pool_names,
            x_range=Range1d(start=0, end=1.45),
            height=220,
            sizing_mode="stretch_width",
            toolbar_location=None,
            tools="",
        )
        self.pools_figure.hbar_stack(
            [f"{part}_share" for part in POOL_PARTS],
            y="name",
            height=0.7,
            color=list(POOL_COLORS),
            source=self.pools_source,
            legend_label=list(POOL_PARTS),
        )
        self.pools_figure.text(
            x=1.02,
            y="name",
            text="label",
            source=self.pools_source,
            text_baseline="middle",
            text_font_size="11px",
        )
        self.pools_figure.xaxis.ticker = [0, 0.25, 0.5, 0.75, 1]
        self.pools_figure.xaxis.major_label_overrides = {
            0: "0%",
            0.25: "25%",
            0.5: "50%",
            0.75: "75%",
            1: "100%",
        }
        self.pools_figure.legend.location = "center_right"
        self.pools_figure.add_tools(
            HoverTool(
                tooltips=[
                    ("pool", "@name"),
                    ("slots", "@slots"),
                    ("running", "@running"),
                    ("queued", "@queued"),
                    ("open", "@open"),
                ]
            )
        )
        self.pools_table = _table(
            self.pools_source,
            [("name", "pool"), ("slots", "slots"), ("running", "running"),
             ("queued", "queued"), ("open", "open"), ("description", "description")],
            height=160,
        )  # fmt: skip
        self.states_figure = figure(
            title="Task instances by state",
            x_range=self._state_names,
            height=220,
            sizing_mode="stretch_width",
            toolbar_location=None,
            tools="",
        )
        self.states_figure.vbar(
            x="state", top="count", width=0.8, color="color", source=self.states_source
        )
        self.states_figure.yaxis.ticker = AdaptiveTicker(min_interval=1)
        self.states_figure.yaxis.minor_tick_line_color = None
        self.states_figure.add_tools(HoverTool(tooltips=[("state", "@state"), ("", "@count")]))
        self.states_table = _table(
            self.states_source, [("state", "state"), ("count", "task instances")], height=160
        )
        self.events_table = _table(
            self.events_source,
            [("time", "time (UTC)", 70), ("event", "event", 90), ("task", "task", 160),
             ("run", "run", 140), ("try", "try", 30), ("reason", "reason", 420)],
            height=320,
        )  # fmt: skip
        self.live_table = _table(
            self.live_source,
            [("task", "task", 160), ("run", "run", 140), ("try", "try", 30),
             ("state", "state", 70), ("executor", "executor", 120), ("pool", "pool", 100),
             ("host", "host", 140)],
            height=200,
        )  # fmt: skip
        live_title = Div(
            text="<b>In flight</b> (queued and running, with their executor)",
            sizing_mode="stretch_width",
        )
        events_title = Div(text="<b>Last events</b>", sizing_mode="stretch_width")
        self.root = column(
            self.header,
            row(self.pools_figure, self.states_figure, sizing_mode="stretch_width"),
            row(self.pools_table, self.states_table, sizing_mode="stretch_width"),
            live_title,
            self.live_table,
            events_title,
            self.events_table,
            sizing_mode="stretch_width",
        )

    def update(self) -> None:
        """Show the latest published summary; data sources change only when it changed."""
        summary = read_summary(self.scheduler)
        self.header.text = header_html(summary)
        shown = None if summary is None else (summary.get("generated_at"), summary.get("seq"))
        if shown == self._shown:
            return
        self._shown = shown
        pools = pool_columns(summary)
        states = state_columns(summary)
        self._pool_names.factors = list(reversed(pools["name"]))
        self._state_names.factors = list(states["state"])
        self.pools_source.data = pools
        self.states_source.data = states
        self.events_source.data = event_columns(summary)
        self.live_source.data = live_columns(summary)
        # Bokeh 3's DataTable redraws on a new row set but not when the same number of rows
        # get new values (its view's indices do not change); any change to the table model
        # itself makes it rerender. Pinned by the browser test.
        self._generation += 1
        for table in (self.pools_table, self.states_table, self.live_table, self.events_table):
            table.tags = [self._generation]


def _build(scheduler: Any, doc: Any, *, title: str) -> AirdaskPage:
    from distributed.dashboard.components.scheduler import BOKEH_THEME

    page = AirdaskPage(scheduler)
    page.update()
    doc.add_periodic_callback(page.update, REFRESH_MS)
    doc.title = title
    doc.theme = BOKEH_THEME
    return page


def airdask_doc(scheduler: Any, extra: dict[str, Any], doc: Any) -> None:
    """The full page (``/airdask``), inside the Dask dashboard's navigation bar."""
    from distributed.dashboard.components.scheduler import env

    page = _build(scheduler, doc, title="Dask: airdask")
    doc.add_root(page.root)
    doc.template = env.get_template("simple.html")
    doc.template_variables.update(extra)


def individual_airdask_doc(scheduler: Any, extra: dict[str, Any], doc: Any) -> None:
    """The bare page (``/individual-airdask``) for JupyterLab's dask extension."""
    page = _build(scheduler, doc, title="Dask: airdask")
    doc.add_root(page.root)
