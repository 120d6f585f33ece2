"""Schedules through the real CLI: ``dags list``, ``pause``/``unpause``, ``backfill``, and a
real ``airdask scheduler`` creating the runs of a DAG whose intervals are already over."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select

from airdask.config import load_config
from airdask.store import DagModel, DagRun, Store
from proc_support import wait_for
from sched_support import AIRDASK, cli, cli_env

LOCAL = {"AIRDASK__CORE__EXECUTOR": "LocalExecutor", "AIRDASK__CORE__PARALLELISM": "4"}
EMBEDDED = {
    "AIRDASK__DASK__DASHBOARD_ADDRESS": "127.0.0.1:0",
    "AIRDASK__DASK__N_WORKERS": "1",
    "AIRDASK__DASK__THREADS_PER_WORKER": "2",
}


def store_for(home: Path) -> Store:
    return Store.from_config(load_config({"AIRDASK_HOME": str(home)}))


def write_dags(home: Path) -> Path:
    dags = home / "dags"
    dags.mkdir()
    (dags / "daily.py").write_text(
        textwrap.dedent(
            """
            from datetime import datetime, timedelta
            from zoneinfo import ZoneInfo
            from airdask.dag import DAG, BashTask

            with DAG("daily", schedule="@daily", max_active_runs=2,
                     start_date=datetime(2024, 1, 1, tzinfo=ZoneInfo("Europe/Paris"))) as d:
                BashTask("t", 'echo "$AIRDASK_CTX_RUN_ID"')

            with DAG("every_2h", schedule=timedelta(hours=2), catchup=True,
                     start_date=datetime.now(ZoneInfo("UTC")) - timedelta(hours=5)) as e:
                BashTask("t", "true")

            with DAG("manual") as m:
                BashTask("t", "true")
            """
        )
    )
    return dags


def runs(store: Store, dag_id: str) -> list[DagRun]:
    with store.session() as session:
        stmt = select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.logical_date)
        return list(session.scalars(stmt))


def test_list_pause_unpause_and_backfill(home: Path) -> None:
    write_dags(home)
    listed = cli("dags", "list", home=home, env=LOCAL)
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if "daily" in row)
    assert "@daily Europe/Paris" in line and "no" in line
    assert "every 2h" in listed.stdout

    paused = cli("dags", "pause", "daily", home=home)
    assert paused.returncode == 0 and "paused daily" in paused.stdout
    store = store_for(home)
    with store.session() as session:
        assert session.get(DagModel, "daily").is_paused  # type: ignore[union-attr]
    line = next(r for r in cli("dags", "list", home=home).stdout.splitlines() if "daily" in r)
    assert "yes" in line
    assert cli("dags", "unpause", "daily", home=home).returncode == 0
    with store.session() as session:
        assert not session.get(DagModel, "daily").is_paused  # type: ignore[union-attr]

    bad = cli(
        "dags", "backfill", "manual", "--start", "2024-01-01", "--end", "2024-01-02", home=home
    )
    assert bad.returncode == 1
    assert bad.stderr.strip() == (
        "error: DAG 'manual' has no schedule: there are no intervals to fill"
    )
    bad = cli("dags", "backfill", "daily", "--start", "yesterday", "--end", "x", home=home)
    assert "error: --start 'yesterday' is not an ISO 8601 date" in bad.stderr

    dry = cli(
        "dags",
        "backfill",
        "daily",
        "--start",
        "2024-01-01",
        "--end",
        "2024-01-03",
        "--dry-run",
        home=home,
    )
    assert dry.returncode == 0 and dry.stdout.count("would run") == 3
    assert runs(store, "daily") == []

    done = cli(
        "dags",
        "backfill",
        "daily",
        "--start",
        "2024-01-01",
        "--end",
        "2024-01-03",
        home=home,
        env=LOCAL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    got = runs(store, "daily")
    assert [r.run_id for r in got] == [
        "backfill__2023-12-31T23:00:00+00:00",  # midnight in Paris
        "backfill__2024-01-01T23:00:00+00:00",
        "backfill__2024-01-02T23:00:00+00:00",
    ]
    assert {r.state for r in got} == {"success"}
    # max_active_runs=2: never three running at once
    starts = sorted((r.start_date, r.end_date) for r in got)
    assert not (starts[2][0] < starts[0][1] and starts[2][0] < starts[1][1])
    again = cli(
        "dags",
        "backfill",
        "daily",
        "--start",
        "2024-01-02",
        "--end",
        "2024-01-04",
        home=home,
        env=LOCAL,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already has a run") == 2
    assert len(runs(store, "daily")) == 4


@pytest.mark.timeout(180)
@pytest.mark.parametrize("executor", ["local", "embedded-dask"])
def test_scheduler_creates_the_due_runs(home: Path, executor: str) -> None:
    write_dags(home)
    assert cli("dags", "pause", "daily", home=home).returncode == 0
    proc = subprocess.Popen(
        [*AIRDASK, "scheduler"],
        env=cli_env(home, LOCAL if executor == "local" else EMBEDDED),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = store_for(home)
    try:

        def two_done() -> bool:
            try:
                got = runs(store, "every_2h")
            except Exception:  # the schema may not be there yet
                return False
            return len(got) == 2 and {r.state for r in got} == {"success"}

        wait_for(two_done, timeout=60, what="the two due runs of every_2h")
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    got = runs(store, "every_2h")
    assert all(r.run_id.startswith("scheduled__") for r in got)
    assert got[1].data_interval_start == got[0].data_interval_end
    assert runs(store, "daily") == []  # paused
    assert runs(store, "manual") == []  # no schedule
