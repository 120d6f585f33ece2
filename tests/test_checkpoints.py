"""SQLite's WAL checkpoints on a thread of their own while a scheduler runs."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqlalchemy import insert, text

from airdask.config import Config
from airdask.dag import DAG, BashTask
from airdask.executors import load_executor
from airdask.scheduler.loop import SchedulerJob
from airdask.scheduler.single_run import drive_run
from airdask.store import Log, Store, init_db
from airdask.store.checkpoints import AUTOCHECKPOINT_PAGES, Checkpointer
from sched_support import make_store


def _autocheckpoint(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text("PRAGMA wal_autocheckpoint")).scalar_one())


def _wal_pages(path: str) -> int:
    """Pages in the WAL that no checkpoint copied yet (a checkpoint of our own says)."""
    with sqlite3.connect(path) as conn:
        _busy, pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(pages) - int(copied)


def _write_pages(store: Store, rows: int) -> None:
    with store.session() as session:
        session.execute(insert(Log), [{"event": "x", "extra": "y" * 2000} for _ in range(rows)])


def test_commits_leave_the_wal_to_the_thread_which_checkpoints_it(tmp_path: Path) -> None:
    """While it runs, no commit of the engine checkpoints: a transaction of more than
    SQLite's 1,000 pages stays in the WAL until the thread copies it."""
    path = str(tmp_path / "airdask.db")
    store = Store.from_url(f"sqlite:///{path}")
    init_db(store)
    checkpoints = Checkpointer(store.engine, interval=3600)  # only the last one, at stop
    checkpoints.start()
    try:
        assert checkpoints.running
        assert _autocheckpoint(store) == 0
        before = os.path.getsize(path)
        _write_pages(store, 3000)  # 6 MB: 1,500 pages of 4 KiB
        # In the WAL only: a checkpoint would have copied them into the database file.
        assert os.path.getsize(path) == before
        assert os.path.getsize(path + "-wal") > 5_000_000
        assert checkpoints.last is None
    finally:
        checkpoints.stop()
    assert not checkpoints.running
    assert checkpoints.last is not None and checkpoints.last[0] == 0
    assert checkpoints.last[1] == checkpoints.last[2] > AUTOCHECKPOINT_PAGES, checkpoints.last
    assert _wal_pages(path) == 0
    assert os.path.getsize(path) > before + 5_000_000
    assert _autocheckpoint(store) == AUTOCHECKPOINT_PAGES  # SQLite's own again
    store.dispose()


def test_the_thread_checkpoints_every_interval(tmp_path: Path) -> None:
    path = str(tmp_path / "airdask.db")
    store = Store.from_url(f"sqlite:///{path}")
    init_db(store)
    checkpoints = Checkpointer(store.engine, interval=0.05)
    checkpoints.start()
    try:
        _write_pages(store, 100)
        checkpoints.done.clear()
        assert checkpoints.done.wait(timeout=10)  # one that started after the commit
        checkpoints.done.clear()
        assert checkpoints.done.wait(timeout=10)
        assert checkpoints.last is not None and checkpoints.last[1] == checkpoints.last[2]
    finally:
        checkpoints.stop()
    store.dispose()


def test_no_thread_for_an_in_memory_sqlite_or_postgresql(pg_url: str) -> None:
    for url in ("sqlite://", pg_url):
        store = Store.from_url(url)
        checkpoints = Checkpointer(store.engine)
        checkpoints.start()
        assert not checkpoints.running
        checkpoints.stop()
        store.dispose()


def test_a_scheduler_checkpoints_while_it_runs_and_gives_the_wal_back(config: Config) -> None:
    store = make_store(config)
    with DAG("ckpt") as dag:
        BashTask("a", "true") >> BashTask("b", "true")
    executor = load_executor("SequentialExecutor", config=config)
    job = SchedulerJob(store=store, executor=executor, config=config, dags={"ckpt": dag})
    outcome = drive_run(job, dag, timeout=60, handle_signals=False)
    assert outcome.state == "success"
    assert not job.checkpoints.running  # stopped with the job
    assert job.checkpoints.last is not None  # the last one, at least
    assert _autocheckpoint(store) == AUTOCHECKPOINT_PAGES
    store.dispose()
