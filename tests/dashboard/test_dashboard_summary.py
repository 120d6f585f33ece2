"""The dashboard summary built from a real metadata DB (SQLite and PostgreSQL), and the
page's pure data conversions."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from airdask.dashboard.page import (
    STATE_COLORS,
    event_columns,
    header_html,
    pool_columns,
    state_columns,
)
from airdask.dashboard.summary import MAX_REASON_CHARS, SummaryPublisher, build_summary
from airdask.scheduler.ready import open_pool_slots
from airdask.store import DagRun, Log, Pool, Store, TaskInstance, init_db
from airdask.store.queries import PoolUsage, pool_usage


@pytest.fixture
def store(any_store: Store) -> Store:
    init_db(any_store, default_pool_slots=16)
    return any_store


def _fill(store: Store) -> None:
    """Two runs; TIs in many states; a 4-slot gpu pool with a 2-slot task running."""
    with store.session() as session:
        session.add(Pool(name="gpu", slots=4, description="the GPU box"))
        session.add(DagRun(dag_id="etl", run_id="r1", state="running"))
        session.add(DagRun(dag_id="etl", run_id="r0", state="success"))
        session.flush()
        tis = [
            ("extract", "r1", "success", "default_pool", 1),
            ("clean", "r1", "running", "default_pool", 1),
            ("train", "r1", "running", "gpu", 2),
            ("score", "r1", "queued", "gpu", 1),
            ("load", "r1", "failed", "default_pool", 1),
            ("report", "r1", None, "default_pool", 1),
            ("extract", "r0", "success", "default_pool", 1),
            ("clean", "r0", "success", "default_pool", 1),
        ]
        for task_id, run_id, state, pool, slots in tis:
            session.add(
                TaskInstance(
                    dag_id="etl",
                    task_id=task_id,
                    run_id=run_id,
                    state=state,
                    pool=pool,
                    pool_slots=slots,
                )
            )
        for i in range(5):
            session.add(
                Log(
                    event="success",
                    dag_id="etl",
                    task_id=f"t{i}",
                    run_id="r1",
                    try_number=1,
                    extra=f"exit code 0 #{i}",
                )
            )
        session.add(
            Log(
                event="failed",
                dag_id="etl",
                task_id="load",
                run_id="r1",
                try_number=2,
                extra="exit code 3: connection refused",
            )
        )


def test_summary_counts_pools_states_runs_and_events(store: Store) -> None:
    _fill(store)
    with store.session() as session:
        summary = build_summary(session, max_events=3)

    assert summary["version"] == 1
    assert datetime.fromisoformat(summary["generated_at"]).tzinfo is not None
    pools = {p["name"]: p for p in summary["pools"]}
    assert pools["gpu"] == {
        "name": "gpu",
        "slots": 4,
        "running": 2,
        "queued": 1,
        "open": 1,
        "description": "the GPU box",
    }
    assert (pools["default_pool"]["running"], pools["default_pool"]["queued"]) == (1, 0)
    assert pools["default_pool"]["open"] == 15
    assert summary["states"] == {"success": 3, "running": 2, "queued": 1, "failed": 1, "none": 1}
    assert summary["runs"] == {"running": 1, "success": 1}

    events = summary["events"]
    assert len(events) == 3  # max_events
    assert events[0]["event"] == "failed"  # newest first
    assert events[0]["reason"] == "exit code 3: connection refused"
    assert (events[0]["task_id"], events[0]["try_number"]) == ("load", 2)
    assert [e["task_id"] for e in events[1:]] == ["t4", "t3"]
    # It travels as JSON (and msgpack) unchanged.
    assert json.loads(json.dumps(summary)) == summary


def test_summary_of_an_empty_database(store: Store) -> None:
    with store.session() as session:
        summary = build_summary(session)
    assert summary["states"] == {} and summary["runs"] == {} and summary["events"] == []
    assert [p["name"] for p in summary["pools"]] == ["default_pool"]
    with store.session() as session:
        assert build_summary(session, max_events=0)["events"] == []


def test_long_reasons_are_cut_and_bad_arguments_refused(store: Store) -> None:
    with store.session() as session:
        session.add(Log(event="failed", dag_id="d", task_id="t", extra="x" * 5000))
    with store.session() as session:
        reason = build_summary(session)["events"][0]["reason"]
        assert len(reason) == MAX_REASON_CHARS and reason.endswith("…")
        with pytest.raises(ValueError, match="max_events"):
            build_summary(session, max_events=-1)
    with pytest.raises(ValueError, match="interval"):
        SummaryPublisher(interval=-1)


def test_reasons_reach_the_page_with_their_secrets_masked(store: Store) -> None:
    reason = "OperationalError: cannot log in to postgresql://etl:etl-pw-77@warehouse/db"
    with store.session() as session:
        session.add(Log(event="failed", dag_id="d", task_id="t", extra=reason))
    with store.session() as session:
        shown = build_summary(session)["events"][0]["reason"]
    assert shown == "OperationalError: cannot log in to postgresql://etl:***@warehouse/db"


# ---- the page's data, pure -------------------------------------------------------------


def test_pool_columns_scale_each_pool_to_its_own_slots() -> None:
    summary = {
        "pools": [
            {"name": "big", "slots": 100, "running": 25, "queued": 25, "open": 50},
            {"name": "small", "slots": 2, "running": 2, "queued": 0, "open": 0},
            {"name": "shrunk", "slots": 1, "running": 3, "queued": 0, "open": -2},
            {"name": "empty", "slots": 0, "running": 0, "queued": 0, "open": 0},
        ]
    }
    cols = pool_columns(summary)
    assert cols["name"] == ["big", "small", "shrunk", "empty"]
    assert cols["running_share"][:2] == [0.25, 1.0]
    assert cols["open_share"][0] == 0.5
    assert cols["open"][2] == -2  # the table tells the truth
    assert cols["running_share"][2] == 1.0 and cols["open_share"][2] == 0  # chart stays in 0..1
    assert cols["label"] == ["50/100 used", "2/2 used", "3/1 used", "0/0 used"]
    assert pool_columns(None)["name"] == []


def test_state_columns_follow_airflow_order_and_colors() -> None:
    cols = state_columns({"states": {"failed": 1, "none": 4, "success": 9, "odd": 2, "queued": 0}})
    assert cols["state"] == ["none", "success", "failed", "odd"]
    assert cols["count"] == [4, 9, 1, 2]
    assert cols["color"][:3] == [STATE_COLORS["none"], "#008000", "#ff0000"]


def test_event_columns_name_tasks_dag_dot_task() -> None:
    summary = {
        "events": [
            {
                "dttm": "2026-11-23T21:05:06.5+00:00",
                "event": "failed",
                "dag_id": "etl",
                "task_id": "load",
                "run_id": "r1",
                "try_number": 2,
                "reason": "exit code 3",
            },
            {"dttm": None, "event": "trigger", "dag_id": "etl", "task_id": None, "run_id": "r2"},
        ]
    }
    cols = event_columns(summary)
    assert cols["task"] == ["etl.load", "etl"]
    assert cols["time"] == ["21:05:06", ""]
    assert cols["try"] == ["2", ""]
    assert cols["reason"] == ["exit code 3", ""]


def test_header_says_when_nothing_or_something_stale_was_published() -> None:
    assert "no summary published yet" in header_html(None)
    made = datetime(2026, 11, 23, 21, 0, tzinfo=timezone.utc)
    summary = {
        "generated_at": made.isoformat(),
        "runs": {"running": 2},
        "states": {"success": 3, "running": 1},
    }
    fresh = header_html(summary, now=made + timedelta(seconds=3))
    assert "3 s ago" in fresh and "running: 2" in fresh and "task instances: 4" in fresh
    assert "stale" not in fresh
    assert "stale" in header_html(summary, now=made + timedelta(minutes=5))


def test_pool_usage_is_the_one_query_behind_scheduler_cli_and_page(store: Store) -> None:
    _fill(store)
    with store.session() as session:
        session.add(
            TaskInstance(
                dag_id="etl", task_id="x", run_id="r1", state="running", pool="gone", pool_slots=3
            )
        )  # a pool deleted meanwhile
    with store.session() as session:
        usage = pool_usage(session)
        given = pool_usage(session, slots={"gpu": 1})
        open_slots = open_pool_slots(session)
        summary = build_summary(session)
    assert list(usage) == ["default_pool", "gpu"]
    assert usage["gpu"] == PoolUsage("gpu", 4, running=2, queued=1, description="the GPU box")
    assert usage["gpu"].open == 1 and usage["default_pool"].running == 1
    assert given == {"gpu": PoolUsage("gpu", 1, running=2, queued=1)} and given["gpu"].open == -2
    assert open_slots == {name: u.open for name, u in usage.items()}
    assert [(p["name"], p["running"], p["queued"], p["open"]) for p in summary["pools"]] == [
        (u.name, u.running, u.queued, u.open) for u in usage.values()
    ]


@pytest.mark.parametrize("module", ["airdask.dashboard.page", "airdask.dashboard.preload"])
def test_the_dask_side_of_the_page_imports_no_database_layer(module: str) -> None:
    """The page runs inside the Dask scheduler, which has no DB credentials and need not
    have SQLAlchemy: importing it must not load the database layer."""
    probe = (
        f"import sys, {module}\n"
        "loaded = sorted(m for m in sys.modules\n"
        "                if m.split('.')[0] == 'sqlalchemy' or m.startswith('airdask.store'))\n"
        "print(loaded)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "[]", proc.stdout
