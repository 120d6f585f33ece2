"""DAG definitions: dependencies, definition-time errors, defaults, weights, DAG files."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from airdask import PythonCommand
from airdask.dag import DAG, BashTask, CommandTask, DagDefinitionError, PythonTask, chain
from airdask.dagbag import DagBag, load_dag
from airdask.executors.common import execution_timeout


def noop() -> None:
    pass


def test_dependencies_with_lists_both_directions() -> None:
    with DAG("deps") as dag:
        a = BashTask("a", "true")
        b = BashTask("b", "true")
        c = BashTask("c", "true")
        d = BashTask("d", "true")
        e = BashTask("e", "true")
        a >> [b, c] >> d
        e << d
    assert a.downstream_task_ids == {"b", "c"}
    assert d.upstream_task_ids == {"b", "c"}
    assert e.upstream_task_ids == {"d"}
    assert [t.task_id for t in dag.roots] == ["a"]
    assert [t.task_id for t in dag.leaves] == ["e"]
    order = dag.topological_order()
    assert order.index("a") < order.index("b") < order.index("d") < order.index("e")


def test_chain_and_reverse_list_shift() -> None:
    with DAG("chained") as dag:
        a, b, c, d = (BashTask(x, "true") for x in "abcd")
        chain(a, [b, c], d)
        [a] << BashTask("z", "true")
    assert dag.get_task("d").upstream_task_ids == {"b", "c"}
    assert dag.get_task("a").upstream_task_ids == {"z"}


def test_cycle_is_refused_at_definition_time() -> None:
    with DAG("cyc"):
        a = BashTask("a", "true")
        b = BashTask("b", "true")
        c = BashTask("c", "true")
        a >> b >> c
        with pytest.raises(DagDefinitionError, match=r"'cyc': c >> a would make a cycle"):
            c >> a
        with pytest.raises(DagDefinitionError, match="cycle"):
            a >> a
    assert a.upstream_task_ids == set()


def test_duplicate_task_id_is_refused() -> None:
    with DAG("dup"):
        BashTask("same", "true")
        with pytest.raises(DagDefinitionError, match=r"DAG 'dup': duplicate task id 'same'"):
            BashTask("same", "echo again")


def test_task_outside_a_dag_and_across_dags() -> None:
    with pytest.raises(DagDefinitionError, match="has no DAG"):
        BashTask("orphan", "true")
    with DAG("one"):
        a = BashTask("a", "true")
    with DAG("two"):
        b = BashTask("b", "true")
    with pytest.raises(DagDefinitionError, match="different DAGs"):
        a >> b


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trigger_rule": "sometimes"}, "unknown trigger_rule 'sometimes'"),
        ({"weight_rule": "heavy"}, "unknown weight_rule"),
        ({"retries": -1}, "retries must be >= 0"),
        ({"pool_slots": 0}, "pool_slots must be >= 1"),
        ({"executor_config": {"x": object()}}, "executor_config must be JSON-serialisable"),
        ({"retry_delay": -5}, "retry_delay must not be negative"),
        ({"on_success_callback": 3}, "on_success_callback must be callable"),
    ],
)
def test_bad_task_arguments_name_the_task(kwargs: dict[str, object], message: str) -> None:
    with DAG("bad"), pytest.raises(DagDefinitionError, match=message) as info:
        BashTask("t1", "true", **kwargs)  # type: ignore[arg-type]
    assert "t1" in str(info.value)


def test_bad_ids_and_commands() -> None:
    with pytest.raises(DagDefinitionError, match="invalid dag_id"):
        DAG("has space")
    with pytest.raises(DagDefinitionError, match="unknown default_args bogus"):
        DAG("x", default_args={"bogus": 1})
    with DAG("cmds"):
        with pytest.raises(DagDefinitionError, match="bash_command"):
            BashTask("b", "  ")
        with pytest.raises(DagDefinitionError, match="argv"):
            CommandTask("c", "echo hi")  # type: ignore[arg-type]
        with pytest.raises(DagDefinitionError, match="python_callable"):
            PythonTask("p", 42)  # type: ignore[arg-type]


def test_default_args_and_explicit_values() -> None:
    defaults = {"retries": 2, "retry_delay": timedelta(seconds=3), "pool": "p", "queue": "q"}
    with DAG("defaults", default_args=defaults) as dag:
        a = BashTask("a", "true")
        b = BashTask("b", "true", retries=0, pool="other", retry_delay=1.5)
    assert (a.retries, a.retry_delay, a.pool, a.queue) == (2, 3.0, "p", "q")
    assert (b.retries, b.retry_delay, b.pool, b.queue) == (0, 1.5, "other", "q")
    assert a.trigger_rule == "all_success" and a.pool_slots == 1
    assert dag.default_args["retries"] == 2


def test_commands() -> None:
    with DAG("commands"):
        bash = BashTask("bash", "echo $HOME")
        argv = CommandTask("argv", ["echo", "a b"])
        py = PythonTask("py", noop, op_args=[1], op_kwargs={"k": 2})
    assert bash.command() == ["bash", "-c", "echo $HOME"]
    assert argv.command() == ["echo", "a b"]
    command = py.command()
    assert isinstance(command, PythonCommand)
    assert (command.func, command.args, command.kwargs) == (noop, (1,), {"k": 2})


def test_execution_timeout_reaches_the_executor_config() -> None:
    with DAG("timeouts"):
        t = BashTask("t", "true", execution_timeout=timedelta(minutes=2), executor_config={"a": 1})
        u = BashTask("u", "true")
    config = t.executor_config_for_run()
    assert config == {"a": 1, "execution_timeout": 120.0}
    assert execution_timeout(config) == 120.0
    assert execution_timeout(u.executor_config_for_run()) is None


def test_priority_weight_rules() -> None:
    with DAG("weights") as dag:
        a = BashTask("a", "true")
        b = BashTask("b", "true", priority_weight=5)
        c = BashTask("c", "true")
        d = BashTask("d", "true", priority_weight=10, weight_rule="absolute")
        e = BashTask("e", "true", weight_rule="upstream")
        a >> [b, c] >> d >> e
    weights = dag.priority_weights()
    # downstream: own + every (distinct) downstream task's own weight
    assert weights["a"] == 1 + 5 + 1 + 10 + 1
    assert weights["b"] == 5 + 10 + 1
    assert weights["c"] == 1 + 10 + 1
    assert weights["d"] == 10
    assert weights["e"] == 1 + 1 + 5 + 1 + 10


def test_dagbag_reports_import_errors_per_file(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text(
        "from airdask.dag import DAG, BashTask\n"
        "with DAG('good', description='fine') as dag:\n"
        "    BashTask('t', 'true')\n"
    )
    (tmp_path / "broken.py").write_text("import no_such_module_xyz\n")
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "syntax.py").write_text("def f(:\n")
    (tmp_path / "_private.py").write_text("raise RuntimeError('never loaded')\n")
    bag = DagBag.from_path(tmp_path)
    assert list(bag.dags) == ["good"]
    assert bag.dags["good"].fileloc == str((tmp_path / "good.py").resolve())
    errors = {Path(p).name: e for p, e in bag.import_errors.items()}
    assert set(errors) == {"broken.py", "exits.py", "syntax.py"}
    assert "no_such_module_xyz" in errors["broken.py"]
    assert errors["syntax.py"].startswith("SyntaxError") and "line 1" in errors["syntax.py"]
    assert load_dag("good", dag_file=None, dags_folder=str(tmp_path)).dag_id == "good"
    with pytest.raises(LookupError, match="no DAG 'nope'"):
        load_dag("nope", dag_file=None, dags_folder=str(tmp_path))


def test_dagbag_duplicate_dag_id_across_files(tmp_path: Path) -> None:
    body = (
        "from airdask.dag import DAG, BashTask\nwith DAG('same') as d:\n    BashTask('t', 'true')\n"
    )
    (tmp_path / "a.py").write_text(body)
    (tmp_path / "b.py").write_text(body)
    bag = DagBag.from_path(tmp_path)
    assert list(bag.dags) == ["same"]
    assert any("already defined" in e for e in bag.import_errors.values())
