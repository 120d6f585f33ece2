from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.exc import IntegrityError

from airdask.cli import cli
from airdask.state import TaskInstanceKey, TaskInstanceState
from airdask.store import (
    DEFAULT_POOL,
    DagRun,
    DatabaseError,
    Job,
    Log,
    Pool,
    Store,
    TaskInstance,
    check_db,
    init_db,
    require_db,
    reset_db,
    utcnow,
)
from airdask.store.transient import Backoff, describe, is_transient


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


def test_ti_without_session_has_key() -> None:
    ti = TaskInstance(dag_id="d", task_id="t", run_id="r", try_number=2)
    assert ti.key == TaskInstanceKey("d", "t", "r", 2, -1)
    assert ti.pool == DEFAULT_POOL and ti.pool_slots == 1 and ti.priority_weight == 1
    assert TaskInstance(dag_id="d", task_id="t", run_id="r").key.try_number == 1


def test_init_is_idempotent_and_creates_default_pool(store: Store) -> None:
    assert init_db(store) is True
    assert init_db(store) is False
    with store.session() as session:
        pool = session.get(Pool, DEFAULT_POOL)
        assert pool is not None and pool.slots == 128
    assert check_db(store).ok
    require_db(store)


def test_init_adds_what_an_older_database_lacks(store: Store) -> None:
    """A database made by an older airdask: a table, a nullable column and an index
    missing."""
    init_db(store)
    with store.engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_ti_ready"))
        conn.execute(text("ALTER TABLE task_instance DROP COLUMN reason"))
        conn.execute(text("ALTER TABLE dag_run DROP COLUMN data_interval_end"))
        conn.execute(text("DROP TABLE task_result"))
    assert init_db(store) is True
    inspector = inspect(store.engine)
    assert "task_result" in inspector.get_table_names()
    assert "reason" in {c["name"] for c in inspector.get_columns("task_instance")}
    assert "data_interval_end" in {c["name"] for c in inspector.get_columns("dag_run")}
    assert "ix_ti_ready" in {i["name"] for i in inspector.get_indexes("task_instance")}
    assert init_db(store) is False


def test_init_drops_the_indexes_an_older_airdask_made_and_nothing_reads(store: Store) -> None:
    """Each index costs every write of its columns: an older database's indexes of the
    state alone, of (pool, state) and of the log's time go, the others stay."""
    init_db(store)
    with store.engine.begin() as conn:
        conn.execute(text("CREATE INDEX ix_ti_state ON task_instance (state)"))
        conn.execute(text("CREATE INDEX ix_ti_pool_state ON task_instance (pool, state)"))
        conn.execute(text("CREATE INDEX ix_log_dttm ON log (dttm)"))
    assert init_db(store) is True
    inspector = inspect(store.engine)
    ti_indexes = {i["name"] for i in inspector.get_indexes("task_instance")}
    assert ti_indexes == {"ix_ti_ready", "ix_ti_run_state"}
    assert {i["name"] for i in inspector.get_indexes("log")} == {"ix_log_ti"}
    assert init_db(store) is False


def test_round_trip_all_columns(store: Store) -> None:
    init_db(store)
    now = utcnow()
    with store.session() as session:
        session.add(DagRun(dag_id="d", run_id="r", conf={"a": 1}, start_date=now))
        session.flush()
        session.add(
            TaskInstance(
                dag_id="d",
                task_id="t",
                run_id="r",
                try_number=1,
                state=TaskInstanceState.QUEUED.value,
                executor_config={"execution_timeout": 3.5, "nested": {"x": [1, 2]}},
                external_executor_id="d.t-try1-r-abc",
                queued_dttm=now,
                queue="gpu",
                pool_slots=2,
                priority_weight=7,
            )
        )
        session.add(Job(hostname="h", pid=1))
        session.add(Log(event="queued", dag_id="d", task_id="t", run_id="r", extra="why"))
    with store.session() as session:
        ti = session.get(TaskInstance, ("d", "t", "r", -1))
        assert ti is not None
        assert ti.executor_config == {"execution_timeout": 3.5, "nested": {"x": [1, 2]}}
        assert ti.queued_dttm == now and ti.queued_dttm.tzinfo is not None
        assert ti.ti_state is TaskInstanceState.QUEUED and ti.key.try_number == 1
        run = session.get(DagRun, ("d", "r"))
        assert run is not None and run.conf == {"a": 1}
        job = session.scalars(select(Job)).one()
        assert job.latest_heartbeat.tzinfo is not None and job.state == "running"
        assert session.scalars(select(Log.extra)).one() == "why"


def test_naive_datetimes_are_refused(store: Store) -> None:
    init_db(store)
    with pytest.raises(Exception, match="naive datetime"), store.session() as session:
        session.add(DagRun(dag_id="d", run_id="r", start_date=datetime(2026, 1, 1)))
        session.flush()


def test_foreign_keys_are_enforced(store: Store) -> None:
    init_db(store)
    with pytest.raises(IntegrityError), store.session() as session:
        session.add(TaskInstance(dag_id="nope", task_id="t", run_id="r"))
        session.flush()


def test_deleting_a_run_deletes_its_tis(store: Store) -> None:
    init_db(store)
    with store.session() as session:
        session.add(DagRun(dag_id="d", run_id="r"))
        session.flush()
        session.add(TaskInstance(dag_id="d", task_id="t", run_id="r"))
    with store.session() as session:
        session.execute(text("DELETE FROM dag_run"))
    with store.session() as session:
        assert session.scalars(select(TaskInstance)).all() == []


def test_reset_drops_history(store: Store) -> None:
    init_db(store, default_pool_slots=5)
    with store.session() as session:
        session.add(Pool(name="p", slots=2))
    reset_db(store, default_pool_slots=9)
    with store.session() as session:
        assert session.get(Pool, "p") is None
        default = session.get(Pool, DEFAULT_POOL)
        assert default is not None and default.slots == 9


def test_check_reports_missing_tables(store: Store) -> None:
    status = check_db(store)
    assert not status.ok and "task_instance" in status.missing_tables
    with pytest.raises(DatabaseError, match="airdask db init"):
        require_db(store)


def test_sqlite_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path}/a.db")
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    store.dispose()


def test_unreachable_database_is_a_clear_error() -> None:
    store = Store.from_url("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(DatabaseError, match="cannot connect to postgresql"):
        check_db(store)


def test_cli_db_init_check_reset(home: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["db", "check"])
    assert result.exit_code != 0
    result = runner.invoke(cli, ["db", "init"])
    assert result.exit_code == 0 and "initialised" in result.output
    assert (home / "airdask.db").exists()
    assert runner.invoke(cli, ["db", "init"]).output.startswith("already initialised")
    assert runner.invoke(cli, ["db", "check"]).exit_code == 0
    assert runner.invoke(cli, ["db", "reset", "--yes"]).exit_code == 0
    assert set(inspect(Store.from_url(f"sqlite:///{home}/airdask.db").engine).get_table_names())


def test_cli_db_init_on_postgres(home: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRDASK__DATABASE__SQL_ALCHEMY_CONN", pg_url)
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "init"]).exit_code == 0
    result = runner.invoke(cli, ["db", "check"])
    assert result.exit_code == 0 and "postgresql" in result.output


def test_timestamps_are_utc_aware(store: Store) -> None:
    init_db(store)
    later = utcnow() + timedelta(hours=1)
    with store.session() as session:
        session.add(
            DagRun(
                dag_id="d", run_id="r", start_date=later.astimezone(timezone(timedelta(hours=9)))
            )
        )
    with store.session() as session:
        run = session.get(DagRun, ("d", "r"))
        assert run is not None and run.start_date == later


def _error_of(store: Store, sql: str) -> Exception:
    try:
        with store.engine.connect() as conn:
            conn.execute(text(sql))
    except Exception as exc:
        return exc
    raise AssertionError(f"{sql!r} did not fail")


def test_transient_database_errors_are_told_apart(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path}/a.db")
    init_db(store)
    assert not is_transient(_error_of(store, "SELECT * FROM no_such_table"))
    with pytest.raises(IntegrityError) as dup, store.session() as session:
        session.add(Pool(name=DEFAULT_POOL, slots=1))
    assert not is_transient(dup.value)
    # another process holds SQLite's write lock longer than the busy timeout: transient
    busy = Store(create_engine(f"sqlite:///{tmp_path}/a.db", connect_args={"timeout": 0}))
    with store.engine.connect() as holder:
        holder.execute(text("BEGIN IMMEDIATE"))
        locked = _error_of(busy, "INSERT INTO slot_pool (name, slots) VALUES ('x', 1)")
        holder.execute(text("ROLLBACK"))
    assert is_transient(locked) and describe(locked) == "OperationalError: database is locked"
    # a PostgreSQL server that refuses connections (down, restarting): transient
    down = Store.from_url("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    assert is_transient(_error_of(down, "SELECT 1"))
    for each in (store, busy, down):
        each.dispose()


def test_backoff_doubles_up_to_its_ceiling() -> None:
    backoff = Backoff(first=0.1, most=0.5)
    assert [backoff.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert backoff.tries == 5
    backoff.reset()
    assert (backoff.next(), backoff.tries) == (0.1, 1)
    with pytest.raises(ValueError, match="0 < first <= most"):
        Backoff(first=1, most=0.5)
