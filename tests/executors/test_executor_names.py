"""``[core] executor`` as a list: parsing, resolving a task's ``executor=``, building the set,
and the one-line errors for names that are not configured."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from airdask.config import Config
from airdask.dag import DAG, BashTask, DagDefinitionError
from airdask.executors import ExecutorLoadError
from airdask.executors.loader import load_executor, load_executors
from airdask.executors.local import LocalExecutor
from airdask.executors.names import (
    ExecutorName,
    ExecutorNameError,
    UnknownExecutorError,
    parse_executor_names,
    resolve,
)
from airdask.executors.sequential import SequentialExecutor
from airdask.scheduler.executors import ExecutorSet, check_dag_executors
from airdask.store import Store, TaskInstance, init_db
from sched_support import cli

SEQ = "airdask.executors.sequential.SequentialExecutor"


def test_entries_in_order_with_aliases_and_paths() -> None:
    names = parse_executor_names(f"DaskExecutor, LocalExecutor ,seq:{SEQ}")
    assert [n.id for n in names] == ["DaskExecutor", "LocalExecutor", "seq"]
    assert names[0].module_path == "airdask.executors.dask.DaskExecutor"
    assert names[2] == ExecutorName(SEQ, "seq")
    assert str(names[2]) == "seq:SequentialExecutor"
    # a task may name an entry by alias, class name or import path; None is the default
    for spelling in ("seq", "SequentialExecutor", SEQ):
        assert resolve(spelling, names) is names[2]
    assert resolve(None, names) is names[0]
    assert resolve("airdask.executors.local.LocalExecutor", names) is names[1]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is empty"),
        ("LocalExecutor,,DaskExecutor", "has an empty entry"),
        ("Nope", "unknown executor 'Nope'"),
        (":LocalExecutor", "empty alias"),
        ("a.b:LocalExecutor", "alias 'a.b' must be"),
        ("LocalExecutor:DaskExecutor", "is a built-in executor's name"),
        ("LocalExecutor,LocalExecutor", "both answer to 'LocalExecutor'"),
        (f"x:{SEQ},y:{SEQ}", "both answer to"),
        ("same:LocalExecutor,same:DaskExecutor", "both answer to 'same'"),
        ("a.pkg.Ex,b.pkg.Ex", "give one an alias"),
    ],
)
def test_bad_lists_are_refused_with_the_reason(value: str, message: str) -> None:
    with pytest.raises(ExecutorNameError, match=message):
        parse_executor_names(value)


def test_an_unknown_choice_names_the_configured_executors() -> None:
    names = parse_executor_names("DaskExecutor,LocalExecutor")
    with pytest.raises(UnknownExecutorError) as info:
        resolve("celery", names)
    assert str(info.value) == (
        "executor 'celery' is not configured (configured in [core] executor: "
        "DaskExecutor (default), LocalExecutor)"
    )


def test_task_executor_from_argument_or_default_args() -> None:
    with DAG("d", default_args={"executor": "LocalExecutor"}) as dag:
        a = BashTask("a", "true")
        b = BashTask("b", "true", executor="seq")
    assert (a.executor, b.executor) == ("LocalExecutor", "seq")
    names = parse_executor_names(f"DaskExecutor,seq:{SEQ}")
    assert check_dag_executors(dag, names) == [
        "task 'a' of DAG 'd': executor 'LocalExecutor' is not configured (configured in "
        "[core] executor: DaskExecutor (default), seq:SequentialExecutor)"
    ]
    with pytest.raises(DagDefinitionError, match="executor must be"), DAG("e"):
        BashTask("a", "true", executor="  ")


def test_load_executors_builds_each_and_load_executor_the_default(config: Config) -> None:
    built = load_executors(f"LocalExecutor,seq:{SEQ}", config=config)
    assert [(n.id, type(e)) for n, e in built] == [
        ("LocalExecutor", LocalExecutor),
        ("seq", SequentialExecutor),
    ]
    assert isinstance(load_executor(f"seq:{SEQ},LocalExecutor", config=config), SequentialExecutor)
    with pytest.raises(ExecutorLoadError, match="cannot import executor module 'no_such'"):
        load_executors("LocalExecutor,no_such.Executor", config=config)


def test_set_routes_by_the_recorded_executor_and_counts_global_slots(config: Config) -> None:
    built = load_executors(f"LocalExecutor,seq:{SEQ}", config=config)
    executors = ExecutorSet(built, parallelism=3)
    local, seq = (e for _, e in built)
    ti = TaskInstance(dag_id="d", task_id="t", run_id="r", try_number=1)
    assert executors.of_ti(ti) is local  # nothing recorded: the default
    ti.executor = "seq"
    assert executors.of_ti(ti) is seq
    ti.executor = "gone"
    assert executors.of_ti(ti) is None
    ti.executor = "SequentialExecutor"  # recorded before it was given the alias "seq"
    assert executors.of_ti(ti) is seq and executors.id_of_ti(ti) == "seq"
    ti.executor = "seq"
    seq.queue_command(ti, ["true"])
    assert executors.slots_occupied == 1 and executors.open_slots == 2
    assert executors.has_task(ti)
    assert executors.label() == "LocalExecutor,seq:SequentialExecutor"
    assert ExecutorSet(built, parallelism=0).open_slots > 10**9


UNKNOWN_DAG = """
from airdask.dag import DAG, BashTask

with DAG("unknown_executor") as dag:
    BashTask("a", "true")
    BashTask("b", "true", executor="celery")
"""


@pytest.mark.timeout(120)
def test_cli_refuses_a_dag_naming_an_unconfigured_executor(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "unknown_executor.py").write_text(UNKNOWN_DAG)
    env = {"AIRDASK__CORE__EXECUTOR": "LocalExecutor,SequentialExecutor"}
    expected = (
        "task 'b' of DAG 'unknown_executor': executor 'celery' is not configured "
        "(configured in [core] executor: LocalExecutor (default), SequentialExecutor)"
    )
    for args in (["run", "unknown_executor"], ["dags", "trigger", "unknown_executor"]):
        done = cli(*args, home=home, env=env)
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], done.stderr
    bad = cli("run", "unknown_executor", home=home, env={"AIRDASK__CORE__EXECUTOR": "A,,B"})
    assert "[core] executor: 'A,,B' has an empty entry" in bad.stderr
    # `dags list` lists the DAG and reports the problem beside the import errors
    listed = cli("dags", "list", home=home, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "Import errors" in listed.stdout and "executor 'celery' is not" in listed.stdout


def test_init_db_adds_the_executor_column_to_an_older_database(any_store: Store) -> None:
    """A database made before task_instance had ``executor`` gains it on ``db init`` (which
    every scheduler-side command runs); its rows keep their values."""
    init_db(any_store)
    with any_store.engine.begin() as conn:
        conn.execute(text('ALTER TABLE task_instance DROP COLUMN "executor"'))
    assert "executor" not in {
        c["name"] for c in inspect(any_store.engine).get_columns("task_instance")
    }
    assert init_db(any_store) is True
    assert "executor" in {c["name"] for c in inspect(any_store.engine).get_columns("task_instance")}
    assert init_db(any_store) is False  # nothing left to add
