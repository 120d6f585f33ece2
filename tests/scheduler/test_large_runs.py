"""The queries a large run depends on (issue 12), on SQLite and PostgreSQL: they give the
right rows, and PostgreSQL reads a task instance by its primary key after a bulk insert.
How fast they are is measured by ``benchmarks/dag_run.py``, not here."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event, insert, select, text

from airdask.dag import DAG, BashTask
from airdask.scheduler.claims import in_runs
from airdask.scheduler.events import _EXTERNAL_ID, _write_back_stmt, load_tis
from airdask.scheduler.ready import evaluate_run, queue_ready
from airdask.scheduler.runs import create_run, start_run
from airdask.scheduler.single_run import PROGRESS_SHARE, next_progress
from airdask.state import TaskInstanceKey
from airdask.store import Store, TaskInstance, init_db
from airdask.store.bulk import execute_many
from airdask.store.db import ANALYZE_MIN_ROWS, analyze_after_insert
from airdask.store.models import utcnow
from airdask.store.queries import pool_usage, select_instances


def _fan(dag_id: str, width: int) -> DAG:
    """``width`` independent tasks ``t00000``, ``t00001``, ..."""
    with DAG(dag_id) as dag:
        for i in range(width):
            BashTask(f"t{i:05d}", "true")
    return dag


def _rows(run_id: str, instances: dict[str, int]) -> list[dict[str, Any]]:
    """Task instances of DAG ``d``: ``{task: n}``, n = 0 for an unmapped task."""
    return [
        {"dag_id": "d", "task_id": task, "run_id": run_id, "map_index": i, "try_number": 0}
        for task, n in instances.items()
        for i in (range(n) if n else [-1])
    ]


INSTANCES = {"a": 0, "b": 0, "c": 0, "m": 10, "n": 5, "z": 0}
WANTED = [("a", -1), ("c", -1), ("m", 2), ("m", 7), ("n", 0), ("n", 4), ("z", -1)]


def _store_with_two_runs(any_store: Store) -> None:
    init_db(any_store)
    with DAG("d") as dag:
        BashTask("t", "true")
    with any_store.session() as session:
        for run_id in ("r1", "r2"):
            create_run(session, dag, run_id=run_id)
            session.execute(insert(TaskInstance), _rows(run_id, INSTANCES))


def test_select_instances_reads_exactly_the_wanted_instances_in_key_order(
    any_store: Store,
) -> None:
    _store_with_two_runs(any_store)
    with any_store.session() as session:
        for chunk in (1, 2, 400):
            got = [
                (ti.run_id, ti.task_id, ti.map_index)
                for stmt in select_instances("d", "r1", reversed(WANTED), chunk=chunk)
                for ti in session.scalars(
                    stmt.order_by(TaskInstance.task_id, TaskInstance.map_index)
                )
            ]
            assert got == [("r1", task, i) for task, i in WANTED], chunk
        assert list(select_instances("d", "r1", [])) == []


def test_load_tis_loads_and_locks_only_the_keys_asked_for(any_store: Store) -> None:
    _store_with_two_runs(any_store)
    keys = [TaskInstanceKey("d", task, run, 1, i) for task, i in WANTED for run in ("r1", "r2")]
    keys.append(TaskInstanceKey("d", "gone", "r1", 1, -1))  # not in the database
    with any_store.session() as session:
        for lock in (False, True):
            found = load_tis(session, keys, lock=lock)
            assert sorted(found) == sorted(
                ("d", task, run, i) for task, i in WANTED for run in ("r1", "r2")
            )


def test_a_large_run_start_leaves_postgresql_reading_a_ti_by_its_key(any_store: Store) -> None:
    """Without statistics for the rows just inserted, PostgreSQL picks ``ix_ti_run_state``
    for an UPDATE by primary key and reads the whole run for each row."""
    init_db(any_store, default_pool_slots=8)
    dag = _fan("big", ANALYZE_MIN_ROWS * 12)
    postgres = any_store.engine.dialect.name == "postgresql"
    with any_store.session() as session:
        run = create_run(session, dag, run_id="r")
        assert start_run(session, run, dag) == ANALYZE_MIN_ROWS * 12
        if postgres:
            plan = "\n".join(
                session.scalars(
                    text(
                        "EXPLAIN UPDATE task_instance SET state = 'queued' WHERE dag_id = 'big' "
                        "AND task_id = 't00007' AND run_id = 'r' AND map_index = -1"
                    )
                )
            )
            assert "task_instance_pkey" in plan, plan
        # Analyzed just now: an insert of less than a tenth of the table is not worth it.
        assert not analyze_after_insert(session, "task_instance", ANALYZE_MIN_ROWS - 1)
        assert not analyze_after_insert(session, "task_instance", ANALYZE_MIN_ROWS)
        assert analyze_after_insert(session, "task_instance", ANALYZE_MIN_ROWS * 2) is postgres


@pytest.mark.postgres
def test_runs_started_one_by_one_keep_the_statistics_fresh(pg_url: str) -> None:
    """Each run is small beside the table it joins; the rows changed since the last
    analysis count too, so the statistics follow a table that grows run by run."""
    store = Store.from_url(pg_url)
    try:
        init_db(store, default_pool_slots=8)
        with DAG("grows") as dag:
            for i in range(ANALYZE_MIN_ROWS):
                BashTask(f"t{i:05d}", "true")
        for _ in range(14):
            with store.session() as session:
                start_run(session, create_run(session, dag), dag)
                # this transaction's counts reach pg_stat_user_tables when it commits
                session.execute(text("SELECT pg_stat_force_next_flush()"))
        with store.session() as session:
            rows = session.scalar(
                text("SELECT reltuples FROM pg_class WHERE oid = 'task_instance'::regclass")
            )
        # Each run's 1,000 alone is under a tenth of the table from 11,000 rows on.
        assert rows is not None and rows >= 13 * ANALYZE_MIN_ROWS, rows
    finally:
        store.dispose()


@contextlib.contextmanager
def _statements(engine: Any, keep: Callable[[str], bool]) -> Iterator[list[str]]:
    """The statements ``engine`` runs in the block that ``keep`` keeps, with their
    parameters inlined (ready for EXPLAIN)."""
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if keep(statement):
            statements.append(str(context.compiled.statement.compile(
                dialect=conn.dialect, compile_kwargs={"literal_binds": True}
            )))  # fmt: skip

    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def _plan(session: Any, sql: str, postgres: bool) -> str:
    if postgres:
        return "\n".join(session.scalars(text(f"EXPLAIN {sql}")))
    return "\n".join(row[3] for row in session.execute(text(f"EXPLAIN QUERY PLAN {sql}")))


def _ready_selects(session: Any, run: tuple[str, str], total: int) -> tuple[list[Any], list[str]]:
    """queue_ready's result and the SELECTs it ran, with their parameters inlined."""

    def ready_select(statement: str) -> bool:
        return (
            statement.lstrip().upper().startswith("SELECT")
            and "task_instance" in statement
            and "priority_weight" in statement
        )

    with _statements(session.get_bind(), ready_select) as selects:
        queued = queue_ready(
            session,
            total=total,
            scope=in_runs([run]),
            job_id=None,
            command_for=lambda session, ti, now: ["true"],
        )
    return queued, selects


def test_the_ready_query_reads_its_index_in_order_instead_of_sorting(any_store: Store) -> None:
    """A pass of a 12,000-task fan-out reads the few hundred rows it queues from
    ``ix_ti_ready``: no sort of every scheduled task instance (10,000 of them, pass after
    pass, was a per-pass cost that grew with the run). Retries that are due are
    merged in priority order with the scheduled ones."""
    init_db(any_store, default_pool_slots=100_000)
    with DAG("fan") as dag:
        for i in range(ANALYZE_MIN_ROWS * 12):
            BashTask(f"t{i:05d}", "true", priority_weight=2 if i % 1000 == 999 else 1)
    postgres = any_store.engine.dialect.name == "postgresql"
    with any_store.session() as session:
        start_run(session, create_run(session, dag, run_id="r"), dag)
        evaluate_run(session, dag, "r")
        # two due retries: one outranks every scheduled task, one ranks among the rest
        for task_id, weight in (("t00005", 3), ("t00006", 1)):
            ti = session.get(TaskInstance, ("fan", task_id, "r", -1))
            assert ti is not None
            ti.state, ti.priority_weight, ti.next_try_at = "up_for_retry", weight, utcnow()
    with any_store.session() as session:
        if postgres:
            session.execute(text("ANALYZE task_instance"))
    with any_store.session() as session:
        queued, selects = _ready_selects(session, ("fan", "r"), total=20)
        assert len(selects) == 2, selects
        # The retries' query may sort its few rows; the scheduled ones are the fan-out.
        for sql in [s for s in selects if "next_try_at <=" not in s]:
            _assert_read_in_order(session, sql, postgres)
    ranked = [ti.task_id for ti, _ in queued]
    heavy = [f"t{i:05d}" for i in range(999, ANALYZE_MIN_ROWS * 12, 1000)]
    assert ranked[0] == "t00005"
    assert ranked[1:13] == heavy
    assert ranked[13:] == ["t00000", "t00001", "t00002", "t00003", "t00004", "t00006", "t00007"]


def _assert_read_in_order(session: Any, sql: str, postgres: bool) -> None:
    """The ready query ``sql`` reads ix_ti_ready in its order: no sort."""
    plan = _plan(session, sql, postgres)
    assert ("Sort" if postgres else "TEMP B-TREE") not in plan, plan
    assert "ix_ti_ready" in plan, plan


def test_pool_usage_reads_only_the_live_task_instances_through_ix_ti_ready(
    any_store: Store,
) -> None:
    """The state has two indexes (ADR 0017); the pools' usage of each pass, with 12,000
    task instances of which 3 are live, searches the first one for the live states instead
    of reading the table."""
    init_db(any_store, default_pool_slots=100_000)
    dag = _fan("usage", ANALYZE_MIN_ROWS * 12)
    postgres = any_store.engine.dialect.name == "postgresql"
    with any_store.session() as session:
        start_run(session, create_run(session, dag, run_id="r"), dag)
        for task_id, state in (("t00001", "queued"), ("t00002", "running"), ("t00003", "queued")):
            ti = session.get(TaskInstance, ("usage", task_id, "r", -1))
            assert ti is not None
            ti.state = state
    with any_store.session() as session:
        if postgres:
            session.execute(text("ANALYZE task_instance"))
    with (
        _statements(any_store.engine, lambda sql: "sum(task_instance.pool_slots)" in sql) as sqls,
        any_store.session() as session,
    ):
        usage = pool_usage(session)
    assert (usage["default_pool"].queued, usage["default_pool"].running) == (2, 1)
    (sql,) = sqls
    with any_store.session() as session:
        plan = _plan(session, sql, postgres)
    assert ("Seq Scan" if postgres else "SCAN") not in plan, plan
    assert "ix_ti_ready" in plan, plan


def test_a_run_s_ready_query_reads_in_order_after_its_first_decisions(
    any_store: Store,
) -> None:
    """start_run analyzes a large run's rows before any is scheduled; the trigger rules'
    first decisions then schedule thousands at once. Planned on the insert's statistics
    (a row or two of the run expected in ``scheduled``), PostgreSQL read the run's every
    scheduled row through ``ix_ti_run_state`` and sorted them, pass after pass (11.8 ms a
    query at 5,000 scheduled): a decision write that large analyzes the table again."""
    init_db(any_store, default_pool_slots=100_000)
    dag = _fan("stale", ANALYZE_MIN_ROWS * 6)
    postgres = any_store.engine.dialect.name == "postgresql"
    with any_store.session() as session:
        start_run(session, create_run(session, dag, run_id="r"), dag)  # analyzes the insert
        evaluate_run(session, dag, "r")  # every row scheduled at once
    with any_store.session() as session:
        queued, selects = _ready_selects(session, ("stale", "r"), total=40)
        assert len(queued) == 40
        assert len(selects) == 2, selects
        for sql in [s for s in selects if "next_try_at <=" not in s]:
            _assert_read_in_order(session, sql, postgres)


def _start_and_evaluate(store: Store, dag: DAG, run_id: str) -> None:
    with store.session() as session:
        start_run(session, create_run(session, dag, run_id=run_id), dag)
        evaluate_run(session, dag, run_id)


def test_a_pass_reads_only_what_it_can_take_unless_rows_do_not_fit(any_store: Store) -> None:
    """The ready query's first page is the budget: at scale nearly every pass queues every
    row it reads. Rows that do not fit (here the two-slot tasks, with one slot left) make
    a second page, from which the one-slot tasks still take the open slot in this pass."""
    init_db(any_store, default_pool_slots=3)
    with DAG("fit") as dag:
        for i in range(3):
            BashTask(f"big{i}", "true", pool_slots=2, priority_weight=10)
        for i in range(5):
            BashTask(f"small{i}", "true")
    _start_and_evaluate(any_store, dag, "r")
    with any_store.session() as session:
        queued, selects = _ready_selects(session, ("fit", "r"), total=3)
    assert [ti.task_id for ti, _ in queued] == ["big0", "small0"]
    assert len(selects) == 4, selects  # two states, two pages
    assert all(" LIMIT 3" in s for s in selects[:2]), selects[:2]


def test_a_pass_whose_rows_all_fit_reads_one_page(any_store: Store) -> None:
    init_db(any_store, default_pool_slots=100)
    with DAG("plain") as plain:
        for i in range(10):
            BashTask(f"t{i}", "true")
    _start_and_evaluate(any_store, plain, "p")
    with any_store.session() as session:
        queued, selects = _ready_selects(session, ("plain", "p"), total=4)
    assert [ti.task_id for ti, _ in queued] == ["t0", "t1", "t2", "t3"]
    assert len(selects) == 2 and all(" LIMIT 4" in s for s in selects), selects


def test_the_progress_of_a_large_run_is_counted_less_often() -> None:
    """``airdask run`` counts the run by state for its progress bar: every 0.5 s while that
    is cheap, and never for more than 5% of the time once the run is large enough for the
    count (a read of every task instance) to cost."""
    assert next_progress(100.0, 0.002, every=0.5) == 100.5
    assert next_progress(100.0, 0.018, every=0.5) == 100.5  # 100,000 TIs on SQLite
    assert next_progress(100.0, 0.2, every=0.5) == pytest.approx(100.0 + 0.2 / PROGRESS_SHARE)


def test_execute_many_writes_what_the_orm_reads_back(any_store: Store) -> None:
    """The write-back's executemany goes to the driver with its parameters processed once
    per statement: datetimes read back as the same aware UTC values, the statement's own
    literals (the live states of the WHERE clause) apply, and the matched rows are counted."""
    init_db(any_store, default_pool_slots=8)
    with DAG("bulk") as dag:
        for i in range(3):
            BashTask(f"t{i}", "true")
    with any_store.session() as session:
        start_run(session, create_run(session, dag, run_id="r"), dag)
    when = datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=timezone(timedelta(hours=2)))
    key = {"pk_dag_id": "bulk", "pk_run_id": "r", "pk_map_index": -1}
    rows = [{**key, "pk_task_id": f"t{i}", "state": "queued", "queued_dttm": when,
             "updated_at": when} for i in range(3)]  # fmt: skip
    with any_store.session() as session:
        stmt = _write_back_stmt(("state", "queued_dttm"))
        assert execute_many(session.connection(), stmt, rows[:2]) == 2
    with any_store.session() as session:
        got = {
            ti.task_id: (ti.state, ti.queued_dttm) for ti in session.scalars(select(TaskInstance))
        }
    assert got["t0"] == got["t1"] == ("queued", when) and got["t2"][0] is None
    assert got["t0"][1] is not None and got["t0"][1].tzinfo is not None
    ext = [{**key, "pk_task_id": f"t{i}", "pk_try_number": 0, "ext": f"x{i}", "now": when}
           for i in range(3)]  # fmt: skip
    with any_store.session() as session:  # only the two queued ones are live
        assert execute_many(session.connection(), _EXTERNAL_ID, ext) == 2
