"""Run context, templates, params and results: the pure parts, and through the scheduler on
every executor (an in-process SchedulerJob driving one run)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from airdask.config import Config
from airdask.context import call_kwargs, render_template, run_context
from airdask.dag import DAG, BashTask, CommandTask, DagDefinitionError, Param, PythonTask
from airdask.executors.events import EventInfo
from airdask.logs import read_log
from airdask.params import ParamError
from airdask.runner import encode_result
from airdask.scheduler.results import (
    MissingResultError,
    decode,
    result_of,
    results_for,
    store_results,
)
from airdask.scheduler.runs import RunError, create_run
from airdask.store import DagRun, Store, TaskInstance, init_db
from airdask.store.models import TaskResultRow
from sched_support import make_store, run_dag
from task_funcs import (
    context_of,
    describe,
    env_context,
    kwargs_of,
    make_blob,
    make_rows,
    make_rows_text,
    make_tuple,
    sum_values,
)

WHEN = datetime(2024, 3, 5, 6, 7, 8, tzinfo=timezone.utc)


def ctx(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "dag_id": "etl",
        "task_id": "load",
        "run_id": "r1",
        "try_number": 1,
        "map_index": -1,
        "logical_date": WHEN,
        "conf": {"n": 3},
        "params": {"day": "x"},
    }
    values.update(overrides)
    return run_context(**values)


# ---- params -----------------------------------------------------------------------------


def test_params_defaults_conf_overrides_and_checks() -> None:
    with DAG("p", params={"n": 10, "rate": 0.5, "day": Param(type=str), "tags": []}) as dag:
        pass
    assert dag.resolve_params({"day": "2024-01-01"}) == {
        "n": 10,
        "rate": 0.5,
        "day": "2024-01-01",
        "tags": [],
    }
    assert dag.resolve_params({"day": "d", "rate": 2})["rate"] == 2.0  # an int fits a float
    with pytest.raises(ParamError, match=r"param 'n' must be int, got str '3'"):
        dag.resolve_params({"day": "d", "n": "3"})
    with pytest.raises(ParamError, match=r"param 'n' must be int, got bool True"):
        dag.resolve_params({"day": "d", "n": True})
    with pytest.raises(ParamError, match=r"unknown param 'nn' in conf \(params: n, rate"):
        dag.resolve_params({"day": "d", "nn": 1})
    with pytest.raises(ParamError, match=r"param 'day' is required"):
        dag.resolve_params({})
    with DAG("free") as free:  # no params: any conf
        pass
    assert free.resolve_params({"anything": 1}) == {}


def test_bad_param_definitions_are_refused() -> None:
    with pytest.raises(DagDefinitionError, match=r"param 'n': .*default of param 'n' must be"):
        DAG("bad", params={"n": Param("x", type=int)})
    with pytest.raises(ParamError, match=r"a param's type is one of"):
        DAG("bad2", params={"n": Param(type=set)})
    with pytest.raises(DagDefinitionError, match=r"default must be one of"):
        DAG("bad3", params={"when": WHEN})


def test_trigger_with_bad_conf_writes_nothing(config: Config) -> None:
    store = make_store(config)
    with DAG("typed", params={"n": 1}) as dag:
        BashTask("a", "true")
    bad = r"DAG 'typed': param 'n' must be int, got str 'two'"
    with pytest.raises(RunError, match=bad), store.session() as session:
        create_run(session, dag, conf={"n": "two"})
    with store.session() as session:
        assert session.scalars(select(DagRun)).all() == []
        run = create_run(session, dag, conf={"n": 2})
        assert run.logical_date == run.queued_at == run.data_interval_start
        assert run.data_interval_end == run.logical_date


# ---- templates and context --------------------------------------------------------------


def test_template_renders_airflow_names() -> None:
    text = (
        "{{ ds }} {{ ds_nodash }} {{ ts }} {{ conf.n }} {{ params.day }} {{ dag_id }}."
        "{{ task_id }} {{ run_id }} {{ macros.ds_add(ds, 1) }} {{ data_interval_end.year }}"
    )
    out = render_template(text, ctx(), field="bash_command", where="task 'load'")
    assert out == ("2024-03-05 20240305 2024-03-05T06:07:08+00:00 3 x etl.load r1 2024-03-06 2024")
    assert render_template("plain $HOME {x}", ctx(), field="f", where="w") == "plain $HOME {x}"


def test_template_errors_name_field_and_missing_name() -> None:
    with pytest.raises(ValueError) as missing:
        render_template("--n {{ conf.m }}", ctx(), field="bash_command", where="task 'load'")
    assert str(missing.value) == (
        "template bash_command of task 'load' cannot be rendered: conf has no key 'm' (it has: n)"
    )
    with pytest.raises(ValueError, match=r"'nope' is undefined"):
        render_template("{{ nope }}", ctx(), field="bash_command", where="t")
    with pytest.raises(ValueError, match=r"template argv\[1\] of t cannot be rendered: .*"):
        render_template("{{ ds ", ctx(), field="argv[1]", where="t")
    with pytest.raises(ValueError, match=r"unsafe|access to attribute"):  # sandboxed
        render_template("{{ ''.__class__.__mro__ }}", ctx(), field="f", where="t")


def test_call_kwargs_follow_the_signature() -> None:
    context = ctx()

    def wants_context(a: int, context: dict[str, Any]) -> None: ...

    def wants_kwargs(a: int, **kwargs: Any) -> None: ...

    def wants_nothing(a: int) -> None: ...

    assert call_kwargs(wants_context, context, {})["context"]["run_id"] == "r1"
    got = call_kwargs(wants_kwargs, context, {"conf": "mine"})
    assert got["run_id"] == "r1" and got["conf"] == "mine"  # op_kwargs win
    assert "a" not in got
    assert call_kwargs(wants_nothing, context, {"x": 1}) == {"x": 1}
    assert call_kwargs(len, context, {}) == {}


def test_result_encoding() -> None:
    assert encode_result({"a": [1, 2]}, 100) == ("json", b'{"a": [1, 2]}')
    fmt, data = encode_result((1, {2}), 1000)  # no JSON round trip: cloudpickle
    assert fmt == "pickle" and decode(fmt, data) == (1, {2})
    assert decode(*encode_result(None, 10)) is None
    with pytest.raises(ValueError, match=r"str, 1002 bytes as json\) is larger than \[core\]"):
        encode_result("x" * 1000, 1000)


def test_result_arguments_add_dependencies_and_refuse_bash() -> None:
    with DAG("refs") as dag:
        extract = PythonTask("extract", make_rows, op_args=[3])
        other = PythonTask("other", make_rows, op_args=[1])
        load = PythonTask("load", sum_values, op_args=[extract], op_kwargs={"scale": other.output})
        bash = BashTask("bash", "echo")
        with pytest.raises(DagDefinitionError, match=r"keeps none \(only a PythonTask"):
            PythonTask("bad", sum_values, op_args=[bash])
    assert load.upstream_task_ids == {"extract", "other"}
    assert load.result_sources() == {"extract", "other"}
    command = load.command_in_run(ctx(), {"extract": [{"value": 2}], "other": 5})
    assert command.args == ([{"value": 2}],) and command.kwargs == {"scale": 5}  # type: ignore[union-attr]
    assert dag.topological_order().index("load") > dag.topological_order().index("extract")


# ---- results_for: what a downstream of a mapped task receives -----------------------------


def test_results_for_mapped_task_in_map_index_order(any_store: Store) -> None:
    """On both databases: a result stored again for the same instance replaces the first."""
    store = any_store
    init_db(store)
    with DAG("mapped") as dag:
        PythonTask("m", make_rows, op_args=[1])
    with store.session() as session:
        run = create_run(session, dag)
        run_key = (run.dag_id, run.run_id)
        session.execute(
            insert(TaskInstance),
            [
                {
                    "dag_id": "mapped",
                    "task_id": "m",
                    "run_id": run.run_id,
                    "map_index": i,
                    "state": "success",
                    "try_number": 1,
                }
                for i in (2, 0, 1)
            ],
        )
        tis = {ti.map_index: ti for ti in session.scalars(select(TaskInstance))}
        rows = [
            (tis[i], 1, EventInfo("ok", result=json.dumps(f"v{i}").encode(), result_format="json"))
            for i in (1, 2)
        ]
        store_results(session, rows)
        with pytest.raises(MissingResultError, match=r"task 'm' \[0\] of run .* has no result"):
            results_for(session, run_key, "m")
        store_results(session, [(tis[0], 1, EventInfo("ok", result=b'"v0"', result_format="json"))])
        assert results_for(session, run_key, "m") == ["v0", "v1", "v2"]
        assert result_of(session, run, "m", 2) == "v2"
        store_results(
            session, [(tis[2], 2, EventInfo("ok", result=b'"new"', result_format="json"))]
        )
        assert results_for(session, run_key, "m") == ["v0", "v1", "new"]  # replaced
        assert len(session.scalars(select(TaskResultRow)).all()) == 3


# ---- through the scheduler, on every executor -----------------------------------------------

EXECUTORS = [
    "SequentialExecutor",
    "LocalExecutor",
    "DebugExecutor",
    "DaskExecutor",
    "LocalDaskExecutor",
]


def pipeline_dag(out: Path) -> DAG:
    with DAG("pipe", params={"n": 2, "label": "x"}, default_args={"retry_delay": 0}) as dag:
        extract = PythonTask("extract", make_rows_text, op_args=["{{ params.n }}"])
        ctx_task = PythonTask("ctx", context_of)
        kw = PythonTask("kw", kwargs_of, op_args=[7])
        PythonTask("load", sum_values, op_args=[extract], op_kwargs={"scale": 10})
        PythonTask("described", describe, op_args=[PythonTask("tup", make_tuple).output])
        PythonTask("env_py", env_context)
        BashTask(
            "bash",
            f'echo "{{{{ ds }}}} {{{{ params.label }}}} {{{{ conf.n }}}} '
            f'$AIRDASK_CTX_RUN_ID $AIRDASK_CTX_TRY_NUMBER $AIRDASK_CTX_CONF" > {out}',
        )
        CommandTask("argv", ["bash", "-c", "test {{ params.n }} = 5"])
        ctx_task >> kw
    return dag


@pytest.mark.timeout(180)
@pytest.mark.filterwarnings("ignore:DebugExecutor is deprecated:DeprecationWarning")
@pytest.mark.parametrize("executor", EXECUTORS)
def test_context_and_results_on_every_executor(
    executor: str, config: Config, tmp_path: Path
) -> None:
    store = make_store(config)
    out = tmp_path / "bash.out"
    dag = pipeline_dag(out)
    state, tis = run_dag(store, config, dag, executor=executor, conf={"n": 5})
    assert state == "success", {t: (ti.state, ti.reason) for t, ti in tis.items()}
    with store.session() as session:
        run = session.scalars(select(DagRun)).one()
        key = (run.dag_id, run.run_id)
        assert results_for(session, key, "extract") == make_rows(5)
        assert results_for(session, key, "load") == 10 * sum(i * i for i in range(5))
        assert results_for(session, key, "described") == "tuple:(1, 'two', {3})"
        seen = results_for(session, key, "ctx")
        assert results_for(session, key, "env_py") == {}  # a callable gets no env variables
        kw = results_for(session, key, "kw")
    assert seen == {
        "dag_id": "pipe",
        "task_id": "ctx",
        "run_id": run.run_id,
        "try_number": 1,
        "map_index": -1,
        "logical_date": run.logical_date.isoformat(),
        "interval": [run.logical_date.isoformat()] * 2,
        "conf": {"n": 5},
        "params": {"n": 5, "label": "x"},
        "ds": run.logical_date.strftime("%Y-%m-%d"),
    }
    assert kw[0] == 7 and {"run_id", "conf", "params", "ds", "logical_date"} <= set(kw[1])
    ds = run.logical_date.strftime("%Y-%m-%d")
    assert out.read_text() == f'{ds} x 5 {run.run_id} 1 {{"n": 5}}\n'
    if executor in ("SequentialExecutor", "LocalExecutor", "DebugExecutor"):
        folder = config.logging.base_log_folder
        _, lines = read_log(folder, tis["bash"].key)
        assert lines[0].startswith(f"[airdask] command: bash -c 'echo \"{ds} x 5 ")
        _, lines = read_log(folder, tis["load"].key)
        assert lines[0] == "[airdask] calling sum_values"


@pytest.mark.timeout(120)
def test_template_error_fails_that_task_only(config: Config, store: Store) -> None:
    with DAG("tmpl") as dag:
        bad = BashTask("bad", "echo {{ conf.missing }}")
        BashTask("after", "true") << bad
        BashTask("fine", "echo {{ run_id }}")
    state, tis = run_dag(store, config, dag, conf={"present": 1})
    assert state == "failed"
    assert tis["bad"].state == "failed" and tis["bad"].try_number == 0
    assert tis["bad"].reason == (
        "template bash_command of task 'bad' of DAG 'tmpl' cannot be rendered: "
        "conf has no key 'missing' (it has: present)"
    )
    assert tis["after"].state == "upstream_failed"
    assert tis["fine"].state == "success"


@pytest.mark.timeout(120)
def test_too_large_result_fails_the_task(config: Config, store: Store) -> None:
    config = config.with_overrides({("core", "max_result_bytes"): "100"})
    with DAG("big") as dag:
        PythonTask("small", make_blob, op_args=[10])
        PythonTask("large", make_blob, op_args=[200])
    state, tis = run_dag(store, config, dag)
    assert state == "failed"
    assert tis["small"].state == "success"
    assert tis["large"].state == "failed"
    assert "is larger than [core] max_result_bytes = 100" in (tis["large"].reason or "")
    with store.session() as session:
        run = session.scalars(select(DagRun)).one()
        assert result_of(session, run, "small") == "x" * 10
        with pytest.raises(MissingResultError, match=r"it is failed, not success"):
            result_of(session, run, "large")


@pytest.mark.timeout(120)
def test_missing_upstream_result_fails_downstream_with_reason(config: Config, store: Store) -> None:
    with DAG("missing", default_args={"retry_delay": 0}) as dag:
        up = PythonTask("up", make_rows, op_args=["not a number"])
        PythonTask("down", sum_values, op_args=[up], trigger_rule="all_done")
    _, tis = run_dag(store, config, dag)
    assert tis["up"].state == "failed"
    assert tis["down"].state == "failed"
    assert (tis["down"].reason or "").startswith("cannot take the result of 'up': task 'up' of")
    assert "it is failed, not success" in (tis["down"].reason or "")


@pytest.fixture
def store(config: Config) -> Store:
    return make_store(config)


def test_init_db_adds_the_new_run_columns_to_an_older_database(config: Config) -> None:
    from sqlalchemy import inspect, text

    from airdask.store import init_db

    store = Store.from_config(config)
    with store.engine.begin() as conn:  # dag_run as the release before logical dates made it
        conn.execute(
            text(
                "CREATE TABLE dag_run (dag_id VARCHAR(250) NOT NULL, run_id VARCHAR(250) NOT "
                "NULL, state VARCHAR(20), conf JSON, dag_file TEXT, queued_at DATETIME, "
                "start_date DATETIME, end_date DATETIME, scheduled_by_job_id INTEGER, "
                "PRIMARY KEY (dag_id, run_id))"
            )
        )
        conn.execute(text("INSERT INTO dag_run (dag_id, run_id, state) VALUES ('old', 'r', 'x')"))
    assert init_db(store) is True
    columns = {c["name"] for c in inspect(store.engine).get_columns("dag_run")}
    assert {"logical_date", "data_interval_start", "data_interval_end"} <= columns
    with DAG("after") as dag:
        BashTask("a", "true")
    with store.session() as session:
        assert session.get(DagRun, ("old", "r")).logical_date is None  # type: ignore[union-attr]
        assert create_run(session, dag).logical_date is not None
    assert init_db(store) is False  # nothing more to add
