"""SQLite's WAL checkpoints on a thread of their own while a scheduler runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, text

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
    assert os.path.getsize(path) > before + 5_000_000  # copied by the thread's last one
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
        assert checkpoints.last is not None
        assert checkpoints.last[1] == checkpoints.last[2] > 0, checkpoints.last
    finally:
        checkpoints.stop()
    store.dispose()


def test_checkpointers_of_one_engine_keep_it_off_while_any_of_them_runs(tmp_path: Path) -> None:
    """Schedulers come and go on one store (``api.run_dag`` in a notebook): the automatic
    checkpoint stays off until the last running one stops, and comes back after; a checkout
    sets it only when the wanted value changed, whatever Checkpointers came before."""
    store = Store.from_url(f"sqlite:///{tmp_path / 'airdask.db'}")
    pragmas: list[str] = []

    def trace(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.set_trace_callback(
            lambda sql: pragmas.append(sql) if "wal_autocheckpoint=" in sql else None
        )

    event.listen(store.engine, "connect", trace)
    init_db(store)
    first, second = Checkpointer(store.engine), Checkpointer(store.engine)
    first.start()
    second.start()
    first.stop()
    assert _autocheckpoint(store) == 0
    second.stop()
    assert _autocheckpoint(store) == AUTOCHECKPOINT_PAGES
    third = Checkpointer(store.engine)
    third.start()
    pragmas.clear()
    for _ in range(5):
        assert _autocheckpoint(store) == 0
    assert len(pragmas) == 1, pragmas  # the one pooled connection, once
    third.stop()
    assert _autocheckpoint(store) == AUTOCHECKPOINT_PAGES
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
