"""Mapped tasks over a literal list: one task instance per element, each scheduled, retried
and shown on its own; trigger rules count every instance; 10,000 instances are cheap."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, select

from airdask.commands import PythonCommand
from airdask.config import Config
from airdask.dag import DAG, BashTask, CommandTask, DagDefinitionError, PythonTask
from airdask.scheduler import runs as runs_module
from airdask.scheduler.ready import evaluate_run
from airdask.scheduler.runs import INSERT_CHUNK, create_run, start_run
from airdask.store import Store, TaskInstance
from sched_support import make_store, run_dag
from task_funcs import fail_on, record_item

S_OK = "success"


@pytest.fixture
def store(config: Config) -> Store:
    return make_store(config)


def test_expand_builds_one_command_per_element() -> None:
    def f(*args: object, **kwargs: object) -> None: ...

    with DAG("m") as dag:
        a = PythonTask("a", f, op_args=["fixed"]).expand(op_args=[1, [2, 3]])
        k = PythonTask("k", f, op_kwargs={"x": 0, "y": 1}).expand(op_kwargs=[{"x": 5}])
        b = BashTask("b", 'echo "$1"').expand(args=["one file.csv", ("x", 2)])
        c = CommandTask("c", ["ls"]).expand(args=["/tmp"])
        plain = BashTask("plain", "true")
    assert a.is_mapped and not plain.is_mapped
    assert a.command_at(0) == PythonCommand(f, "fixed", 1)
    assert a.command_at(1) == PythonCommand(f, "fixed", 2, 3)
    assert k.command_at(0) == PythonCommand(f, x=5, y=1)
    assert b.command_at(0) == ["bash", "-c", 'echo "$1"', "b", "one file.csv"]
    assert b.command_at(1) == ["bash", "-c", 'echo "$1"', "b", "x", "2"]
    assert c.command_at(0) == ["ls", "/tmp"]
    assert plain.command_at(-1) == plain.command()
    with pytest.raises(IndexError, match="map_index 2 is outside the 2 mapped elements"):
        a.command_at(2)
    assert dag.task_ids == ["a", "k", "b", "c", "plain"]


def test_expand_bad_input_is_a_clear_error() -> None:
    def f() -> None: ...

    with DAG("bad"):
        t = PythonTask("t", f)
        with pytest.raises(DagDefinitionError, match="takes one of op_args= or op_kwargs="):
            t.expand()
        with pytest.raises(DagDefinitionError, match=r"expand\(op_args=...\) takes a list .* str"):
            t.expand(op_args="abc")
        with pytest.raises(DagDefinitionError, match="takes a list of dicts, got an element 3"):
            t.expand(op_kwargs=[{"a": 1}, 3])  # type: ignore[list-item]
        t.expand(op_args=[1])
        with pytest.raises(DagDefinitionError, match="expand\\(\\) may be called once"):
            t.expand(op_args=[2])


def test_each_instance_runs_retries_and_counts_for_trigger_rules(
    store: Store, config: Config, tmp_path: Path
) -> None:
    out = tmp_path / "items.txt"
    with DAG("mapped") as dag:
        start = BashTask("start", "true")
        each = PythonTask(
            "each",
            record_item,
            op_args=[str(out)],
            op_kwargs={"fail_first_try_of": "b"},
            retries=1,
            retry_delay=0,
        ).expand(op_args=["a", "b", "c"])
        bad = PythonTask("bad", fail_on, op_args=["x"]).expand(op_args=[1, "x", 3])
        after_each = BashTask("after_each", "true")
        after_bad = BashTask("after_bad", "true")
        on_failure = BashTask("on_failure", "true", trigger_rule="one_failed")
        start >> [each, bad]
        each >> after_each
        bad >> [after_bad, on_failure]
    state, _ = run_dag(store, config, dag)
    assert state == "failed"
    with store.session() as session:
        rows = session.execute(
            select(
                TaskInstance.task_id,
                TaskInstance.map_index,
                TaskInstance.state,
                TaskInstance.try_number,
            ).order_by(TaskInstance.task_id, TaskInstance.map_index)
        ).all()
    got = {(t, i): (s, n) for t, i, s, n in rows}
    assert got[("each", 0)] == (S_OK, 1)
    assert got[("each", 1)] == (S_OK, 2)  # its first try failed, its retry succeeded
    assert got[("each", 2)] == (S_OK, 1)
    assert sorted(out.read_text().split()) == ["a", "b", "c"]
    assert [got[("bad", i)][0] for i in range(3)] == [S_OK, "failed", S_OK]
    assert got[("after_each", -1)][0] == S_OK
    assert got[("after_bad", -1)][0] == "upstream_failed"
    assert got[("on_failure", -1)][0] == S_OK


def test_an_empty_list_skips_the_task(store: Store, config: Config) -> None:
    with DAG("empty") as dag:
        none = BashTask("none", 'echo "$1"').expand(args=[])
        after = BashTask("after", "true")
        always = BashTask("always", "true", trigger_rule="all_done")
        none >> [after, always]
    state, tis = run_dag(store, config, dag)
    assert state == "success"
    assert tis["none"].state == "skipped" and tis["none"].map_index == -1
    assert tis["none"].reason == "mapped over an empty list: nothing to run"
    assert tis["after"].state == "skipped"
    assert tis["always"].state == S_OK


def test_ten_thousand_instances_are_a_bulk_operation(store: Store) -> None:
    """Start a run with 10,000 mapped instances and evaluate it: a handful of statements,
    not one per instance (counted at the DB-API cursor)."""
    n = 10_000
    with DAG("wide") as dag:
        start = BashTask("start", "true")
        wide = BashTask("wide", 'echo "$1"').expand(args=list(range(n)))
        end = BashTask("end", "true")
        start >> wide >> end
    statements: list[str] = []

    def count(conn: object, cursor: object, stmt: str, *args: object) -> None:
        statements.append(stmt)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        began = time.perf_counter()
        with store.session() as session:
            run = create_run(session, dag)
            assert start_run(session, run, dag) == n + 2
        started = time.perf_counter()
        with store.session() as session:
            session.execute(
                TaskInstance.__table__.update()  # type: ignore[attr-defined]
                .where(TaskInstance.task_id == "start")
                .values(state=S_OK)
            )
            changed, _ = evaluate_run(session, dag, run.run_id)
        evaluated = time.perf_counter()
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    assert changed == n  # every instance of "wide" scheduled; "end" waits for them
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT INTO TASK_INSTANCE")]
    updates = [s for s in statements if s.lstrip().upper().startswith("UPDATE TASK_INSTANCE")]
    # one INSERT per INSERT_CHUNK rows (so that a run's rows are never all built at once)
    most_inserts = -(-(n + 2) // INSERT_CHUNK)
    assert len(inserts) <= most_inserts and len(updates) <= 2, (len(inserts), len(updates))
    with store.session() as session:
        states = session.execute(
            select(TaskInstance.state).where(TaskInstance.task_id == "wide").distinct()
        ).all()
    assert states == [("scheduled",)]
    print(
        f"\n10,000 mapped instances: start_run {started - began:.3f}s, "
        f"evaluate_run {evaluated - started:.3f}s, {len(statements)} statements in all"
    )


def test_a_run_s_rows_are_made_as_they_are_inserted(store: Store) -> None:
    """A 12,000-instance run is inserted INSERT_CHUNK rows at a time, each chunk made just
    before its statement: never the whole run's rows in memory at once."""
    n = 12_000
    with DAG("rows") as dag:
        BashTask("wide", 'echo "$1"').expand(args=list(range(n)))
    made = 0
    real_iter = runs_module._task_instance_rows

    def counted(*args: object) -> Iterator[dict[str, object]]:
        nonlocal made
        for row in real_iter(*args):  # type: ignore[arg-type]
            made += 1
            yield row

    made_at_insert: list[int] = []

    def count(conn: object, cursor: object, stmt: str, *args: object) -> None:
        if stmt.lstrip().upper().startswith("INSERT INTO TASK_INSTANCE"):
            made_at_insert.append(made)

    event.listen(store.engine, "before_cursor_execute", count)
    runs_module._task_instance_rows = counted  # type: ignore[assignment]
    try:
        with store.session() as session:
            assert start_run(session, create_run(session, dag), dag) == n
    finally:
        runs_module._task_instance_rows = real_iter  # type: ignore[assignment]
        event.remove(store.engine, "before_cursor_execute", count)
    assert made_at_insert == [INSERT_CHUNK, 2 * INSERT_CHUNK, n], made_at_insert


def test_the_example_runs(store: Store, config: Config) -> None:
    from airdask.dagbag import DagBag

    root = Path(__file__).resolve().parents[2]
    bag = DagBag.from_path(root / "examples" / "mapped_dag.py")
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["mapped_example"]
    assert dag.timetable.summary == "@daily"
    state, _ = run_dag(store, config, dag)
    assert state == "success"
    with store.session() as session:
        n = len(session.scalars(select(TaskInstance.map_index)).all())
    assert n == 1 + 4 + 2 + 1 + 3 + 1 + 1  # start, tables, files, partitions, ..., report
    from airdask.api import DagRunResult

    with store.session() as session:
        run_id = session.scalars(select(TaskInstance.run_id).limit(1)).one()
    assert DagRunResult.load(store, "mapped_example", run_id).value("summarise") == 24


def test_mapping_over_an_upstream_result_at_run_time(store: Store, config: Config) -> None:
    from airdask.api import DagRunResult
    from task_funcs import make_blob, numbers, square, total

    with DAG("dynamic") as dag:
        nums = PythonTask("nums", numbers, op_args=[4])
        squares = PythonTask("squares", square, retries=1, retry_delay=0).expand(
            op_args=nums.output
        )
        PythonTask("summed", total, op_args=[squares])  # the list of results
        nothing = PythonTask("nothing", numbers, op_args=[0])
        echo = BashTask("echo", 'echo "$1"').expand(args=nothing)
        after_echo = BashTask("after_echo", "true")
        echo >> after_echo
        text = PythonTask("text", make_blob, op_args=[3])
        PythonTask("per_char", square).expand(op_args=text)
    assert squares.result_sources() == {"nums"} and "squares" in nums.downstream_task_ids
    state, _ = run_dag(store, config, dag)
    assert state == "failed"  # per_char: its upstream's result is not a list
    with store.session() as session:
        run_id = session.scalars(select(TaskInstance.run_id).limit(1)).one()
    result = DagRunResult.load(store, "dynamic", run_id)
    assert [t.map_index for t in result.mapped("squares")] == [0, 1, 2, 3]
    assert {t.state for t in result.mapped("squares")} == {S_OK}
    assert result.value("squares") == [0, 1, 4, 9]
    assert result.value("summed") == 14
    assert result["echo"].state == "skipped"
    assert result["echo"].reason == "mapped over an empty list: nothing to run"
    assert result["after_echo"].state == "skipped"
    assert result["per_char"].state == "failed"
    assert result["per_char"].reason == (
        "cannot expand over the result of 'text': it must be a list, got str"
    )


def test_mapping_over_a_task_that_keeps_no_result_is_refused() -> None:
    with DAG("refused"):
        shell = BashTask("shell", "echo 1 2 3")
        with pytest.raises(DagDefinitionError, match=r"maps over the result of .*keeps none"):
            PythonTask("each", print).expand(op_args=shell)


def test_ten_thousand_instances_from_a_result_are_a_bulk_operation(store: Store) -> None:
    """Expanding over an upstream's 10,000-element result: a few statements, not 10,000."""
    import json

    from airdask.store.models import TaskResultRow
    from task_funcs import numbers, square

    n = 10_000
    with DAG("wide_result") as dag:
        nums = PythonTask("nums", numbers, op_args=[n])
        PythonTask("each", square).expand(op_args=nums)
    with store.session() as session:
        run = create_run(session, dag)
        assert start_run(session, run, dag) == 2  # nums, and the placeholder of each
        session.execute(
            TaskInstance.__table__.update()  # type: ignore[attr-defined]
            .where(TaskInstance.task_id == "nums")
            .values(state=S_OK)
        )
        session.add(
            TaskResultRow(
                dag_id="wide_result",
                run_id=run.run_id,
                task_id="nums",
                map_index=-1,
                try_number=1,
                format="json",
                value=json.dumps(list(range(n))).encode(),
            )
        )
    statements: list[str] = []

    def count(conn: object, cursor: object, stmt: str, *args: object) -> None:
        statements.append(stmt)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        began = time.perf_counter()
        with store.session() as session:
            changed, _ = evaluate_run(session, dag, run.run_id)
        took = time.perf_counter() - began
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    assert changed == n
    assert len(statements) <= 10, statements
    with store.session() as session:
        rows = session.execute(
            select(TaskInstance.state, TaskInstance.map_index).where(TaskInstance.task_id == "each")
        ).all()
    assert len(rows) == n and {s for s, _ in rows} == {"scheduled"}
    assert sorted(i for _, i in rows) == list(range(n))
    print(f"\nexpanding 10,000 instances from a result: {took:.3f}s, {len(statements)} statements")
