"""``airdask run`` and friends end to end: the real CLI in a subprocess, a temp AIRDASK_HOME."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import func, select

from airdask.cli import main
from airdask.config import load_config
from airdask.store import DagRun, Job, Store, TaskInstance
from proc_support import wait_for
from sched_support import AIRDASK, cli, cli_env
from task_funcs import ledger_step_source, max_concurrency, read_ledger

LOCAL = {"AIRDASK__CORE__EXECUTOR": "LocalExecutor", "AIRDASK__CORE__PARALLELISM": "8"}


def big_dag(path: Path, ledger: Path, marker: Path, *, dag_id: str = "big") -> Path:
    """55 tasks: start >> 40 workers (10 in pool 'two') >> join >> trigger-rule tail."""
    path.write_text(
        "from airdask.dag import DAG, BashTask, PythonTask\n\n"
        + ledger_step_source(ledger)
        + textwrap.dedent(
            f"""
            def add(a, b):
                print(a + b)

            with DAG({dag_id!r}, default_args={{"retry_delay": 0}}) as dag:
                start = BashTask("start", "echo start")
                pooled = [BashTask(f"pooled_{{i}}", step(f"pooled_{{i}}", 0.2), pool="two")
                          for i in range(10)]
                plain = [BashTask(f"plain_{{i}}", f"echo plain {{i}}") for i in range(28)]
                flaky = BashTask(
                    "flaky",
                    "if [ -e {marker} ]; then echo second; else touch {marker}; exit 1; fi",
                    retries=1,
                )
                py = PythonTask("py", add, op_args=[2, 3])
                join = BashTask("join", "echo join")
                start >> pooled + plain + [flaky, py] >> join
                failing_branch = BashTask("maybe", "exit 0")
                join >> failing_branch
                tail = [BashTask(f"tail_{{i}}", "echo tail", trigger_rule="all_done")
                        for i in range(10)]
                failing_branch >> tail
                skipped = BashTask("on_failure_only", "echo no", trigger_rule="one_failed")
                tail >> skipped
                final = BashTask("final", "echo done", trigger_rule="none_failed")
                skipped >> final
            """
        )
    )
    return path


def store_for(home: Path) -> Store:
    return Store.from_config(load_config({"AIRDASK_HOME": str(home)}))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.mark.timeout(180)
def test_run_big_dag_with_pool_retry_and_trigger_rules(home: Path, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    dag_file = big_dag(tmp_path / "big.py", ledger, tmp_path / "marker")
    assert cli("pools", "set", "two", "2", home=home).returncode == 0
    result = cli("run", str(dag_file), home=home, env=LOCAL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout
    with store_for(home).session() as session:
        run = session.scalars(select(DagRun)).one()
        tis = {ti.task_id: ti for ti in session.scalars(select(TaskInstance))}
    assert run.state == "success"
    assert len(tis) == 55
    states = {t: ti.state for t, ti in tis.items()}
    assert states.pop("on_failure_only") == "skipped"
    assert set(states.values()) == {"success"}
    assert tis["flaky"].try_number == 2
    assert max_concurrency(str(ledger)) == 2  # the pool of 2 was used fully, never exceeded
    assert len([r for r in read_ledger(str(ledger)) if r[0] == "end"]) == 10
    assert "flaky" in result.stdout and "┃ state" in result.stdout


def test_failing_task_marks_downstream_and_exits_nonzero(home: Path, tmp_path: Path) -> None:
    dag_file = tmp_path / "fails.py"
    dag_file.write_text(
        "from airdask.dag import DAG, BashTask\n"
        "with DAG('fails') as dag:\n"
        "    a = BashTask('a', 'echo about to fail; exit 4')\n"
        "    b = BashTask('b', 'echo b')\n"
        "    c = BashTask('c', 'echo c')\n"
        "    a >> b >> c\n"
    )
    result = cli("run", str(dag_file), home=home, env=LOCAL)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failed" in result.stdout and "exit code 4" in result.stdout
    with store_for(home).session() as session:
        run_id = session.scalars(select(DagRun.run_id)).one()
        states = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state)).all())
    assert states == {"a": "failed", "b": "upstream_failed", "c": "upstream_failed"}
    shown = cli("tasks", "states", "fails", run_id, home=home)
    assert shown.returncode == 0 and "upstream_failed" in shown.stdout
    logs = cli("tasks", "logs", "fails", "a", run_id, home=home)
    assert logs.returncode == 0
    assert "about to fail" in logs.stdout and "exit code 4" in logs.stdout
    bad_try = cli("tasks", "logs", "fails", "a", run_id, "--try", "3", home=home)
    assert bad_try.returncode == 1 and "tries 1..1, not 3" in bad_try.stderr


def _count_runs(home: Path) -> int:
    with store_for(home).session() as session:
        return int(session.scalar(select(func.count()).select_from(DagRun)) or 0)


def test_typos_are_one_line_errors_and_write_nothing(
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In-process through ``airdask.cli.main`` (the subprocess path is the same code; the
    other tests run it): ten invocations would cost ten interpreter start-ups."""
    for name in list(os.environ):
        if name.startswith("AIRDASK"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AIRDASK_HOME", str(home))
    for name, value in LOCAL.items():
        monkeypatch.setenv(name, value)

    def run_cli(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["airdask", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code, capsys.readouterr().err

    dag_file = tmp_path / "typo.py"
    dag_file.write_text(
        "from airdask.dag import DAG, BashTask\n"
        "with DAG('typo') as dag:\n"
        "    BashTask('a', 'true', pool='tiny', pool_slots=3)\n"
    )
    ok_file = tmp_path / "fine.py"
    ok_file.write_text(
        "from airdask.dag import DAG, BashTask\n"
        "with DAG('fine') as dag:\n"
        "    BashTask('a', 'true')\n"
    )
    cases = [
        (["run", "no_such_dag"], "unknown DAG id 'no_such_dag'"),
        (["run", str(dag_file)], "unknown pool 'tiny'"),
        (["run", str(dag_file), "--conf", "{not json"], "--conf is not valid JSON"),
        (["run", str(dag_file), "--conf", "[1]"], "--conf must be a JSON object"),
        (["run", str(ok_file), "--executor", "NoSuchExecutor"], "unknown executor"),
        (["dags", "trigger", "nope"], "unknown DAG id 'nope'"),
        (["pools", "delete", "default_pool"], "default_pool cannot be deleted"),
        (["tasks", "states", "typo", "run1"], "has no runs"),
    ]
    # an unreachable --cluster: tests/e2e/test_run_e2e_dask.py (it needs a short connect timeout)
    oversized = (["run", str(dag_file)], "needs 3 slots of pool 'tiny', which has only 2")
    for args, message in [*cases, oversized]:
        if args is oversized[0]:
            assert run_cli("pools", "set", "tiny", "2")[0] == 0
        code, stderr = run_cli(*args)
        assert code != 0, args
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, stderr)
        assert message in lines[0], (args, lines[0])
    assert _count_runs(home) == 0


def test_dags_list_reports_import_errors_per_file(home: Path) -> None:
    dags = home / "dags"
    dags.mkdir()
    (dags / "ok.py").write_text(
        "from airdask.dag import DAG, BashTask\n"
        "with DAG('ok_dag') as d:\n"
        "    BashTask('t', 'true')\n"
    )
    (dags / "broken.py").write_text("from airdask.dag import DAG\nDAG('x y')\n")
    result = cli("dags", "list", home=home)
    assert result.returncode == 0
    assert "ok_dag" in result.stdout
    assert "broken.py" in result.stdout and "invalid dag_id 'x y'" in result.stdout


def test_trigger_then_scheduler_then_sigterm(home: Path) -> None:
    dags = home / "dags"
    dags.mkdir()
    (dags / "trig.py").write_text(
        "from airdask.dag import DAG, BashTask, PythonTask\n"
        "with DAG('trig') as d:\n"
        "    BashTask('a', 'echo a') >> BashTask('b', 'echo b')\n"
    )
    trig = cli("dags", "trigger", "trig", "--conf", '{"k": 1}', "--run-id", "r1", home=home)
    assert trig.returncode == 0 and "triggered trig run r1" in trig.stdout
    proc = subprocess.Popen(
        [*AIRDASK, "scheduler"],
        env=cli_env(home, LOCAL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = store_for(home)
    try:

        def finished() -> bool:
            with store.session() as session:
                run = session.get(DagRun, ("trig", "r1"))
                return run is not None and run.state == "success"

        wait_for(finished, timeout=60, what="run r1 to succeed under `airdask scheduler`")
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    with store.session() as session:
        job = session.scalars(select(Job)).one()
        run = session.get(DagRun, ("trig", "r1"))
    assert job.state == "success" and job.end_date is not None and job.pid == proc.pid
    assert run is not None and run.conf == {"k": 1}


def test_pools_set_list_delete(home: Path) -> None:
    assert cli("pools", "set", "db", "3", "--description", "database", home=home).returncode == 0
    assert "updated pool db (5 slots)" in cli("pools", "set", "db", "5", home=home).stdout
    listed = cli("pools", "list", home=home).stdout
    assert "db" in listed and "database" in listed and "default_pool" in listed
    assert cli("pools", "set", "neg", "-1", home=home).returncode != 0
    assert cli("pools", "delete", "db", home=home).returncode == 0
    assert "no pool 'db'" in cli("pools", "delete", "db", home=home).stderr


def test_module_entry_point(home: Path) -> None:
    result = subprocess.run(
        [*AIRDASK, "--help"], capture_output=True, text=True, env=cli_env(home), check=False
    )
    assert result.returncode == 0
    for command in ("run", "scheduler", "dags", "tasks", "pools"):
        assert command in result.stdout
    assert os.environ.get("AIRDASK_HOME") != str(home)


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_run_big_dag_on_postgresql(home: Path, tmp_path: Path, pg_url: str) -> None:
    ledger = tmp_path / "ledger"
    dag_file = big_dag(tmp_path / "big.py", ledger, tmp_path / "marker", dag_id="big_pg")
    env = {**LOCAL, "AIRDASK__DATABASE__SQL_ALCHEMY_CONN": pg_url}
    assert cli("pools", "set", "two", "2", home=home, env=env).returncode == 0
    result = cli("run", str(dag_file), home=home, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    store = Store.from_url(pg_url)
    try:
        with store.session() as session:
            assert session.scalars(select(DagRun.state)).one() == "success"
            states = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state)).all())
    finally:
        store.dispose()
    assert len(states) == 55 and states.pop("on_failure_only") == "skipped"
    assert set(states.values()) == {"success"}
    assert max_concurrency(str(ledger)) == 2
    assert not (home / "airdask.db").exists()  # everything went to PostgreSQL


def test_sigint_stops_run_cleanly(home: Path, tmp_path: Path) -> None:
    started = tmp_path / "started"
    dag_file = tmp_path / "slow.py"
    dag_file.write_text(
        "from airdask.dag import DAG, BashTask\n"
        "with DAG('slow') as dag:\n"
        f"    a = BashTask('a', 'touch {started}; sleep 1; echo a done')\n"
        "    a >> BashTask('b', 'echo b')\n"
    )
    proc = subprocess.Popen(
        [*AIRDASK, "run", str(dag_file)],
        env=cli_env(home, LOCAL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(started.exists, timeout=60, what="task a to start")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, out + err
    assert "interrupted" in out
    with store_for(home).session() as session:
        job = session.scalars(select(Job)).one()
        run = session.scalars(select(DagRun)).one()
        states = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state)).all())
    # executor.end() waited for the running attempt and its outcome was recorded
    assert states["a"] == "success"
    assert states["b"] in (None, "scheduled")
    assert job.state == "success" and job.end_date is not None
    # the unfinished run is released for `airdask scheduler` to finish
    assert run.state == "running" and run.scheduled_by_job_id is None


def test_pool_in_use_cannot_be_deleted(home: Path) -> None:
    assert cli("pools", "set", "busy", "1", home=home).returncode == 0
    store = store_for(home)
    with store.session() as session:
        session.add(DagRun(dag_id="d", run_id="r", state="running"))
        session.flush()
        session.add(TaskInstance(dag_id="d", task_id="t", run_id="r", pool="busy", state="queued"))
    refused = cli("pools", "delete", "busy", home=home)
    assert refused.returncode == 1
    assert (
        refused.stderr.strip() == "error: pool 'busy' is in use by 1 task instance(s); not deleted"
    )
    listed = cli("pools", "list", home=home).stdout
    busy_row = next(line for line in listed.splitlines() if "busy" in line)
    # slots, running, queued, open
    assert [c.strip() for c in busy_row.split("│")[2:6]] == ["1", "0", "1", "0"]
