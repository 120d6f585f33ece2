"""What ``airdask run`` and ``airdask tasks states`` print: every row for a small run, counts
by state and the unsuccessful rows for a large one (cli/ti_report.py)."""

from __future__ import annotations

from rich.console import Console
from sqlalchemy import update

from airdask.cli.ti_report import run_report
from airdask.config import Config
from airdask.dag import DAG, BashTask
from airdask.scheduler.runs import create_run, start_run
from airdask.store import Store, TaskInstance
from sched_support import make_store


def _run(store: Store, n: int) -> str:
    with DAG("big") as dag:
        for i in range(n):
            BashTask(f"t{i:04d}", "true")
    with store.session() as session:
        run = create_run(session, dag, run_id="r")
        start_run(session, run, dag)
        session.execute(update(TaskInstance).values(state="success"))
        session.execute(
            update(TaskInstance)
            .where(TaskInstance.task_id == "t0007")
            .values(state="failed", reason="exit code 3")
        )
    return "r"


def _text(store: Store, **kwargs: bool) -> str:
    console = Console(record=True, width=200)
    with store.session() as session:
        for shown in run_report(session, "big", "r", **kwargs):
            console.print(shown)
    return console.export_text()


def test_a_large_run_is_summarised_with_its_failures(config: Config) -> None:
    store = make_store(config)
    _run(store, 150)
    text = _text(store)
    assert "success" in text and "149" in text and "150" in text
    assert "t0007" in text and "exit code 3" in text  # the failure's own row
    assert "t0008" not in text  # no row for a success
    assert "--all lists every one" in text
    every = _text(store, all_rows=True)
    assert "t0008" in every and "t0149" in every


def test_a_small_run_gets_every_row(config: Config) -> None:
    store = make_store(config)
    _run(store, 20)
    text = _text(store)
    assert "t0000" in text and "t0019" in text and "--all" not in text
