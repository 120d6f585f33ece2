"""Params, templates and results end to end: ``airdask run examples/pipeline_dag.py
--conf ...`` in a subprocess on LocalExecutor and on the embedded Dask cluster, then
``airdask tasks result/render/logs``; a bad conf is refused before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from airdask.config import load_config
from airdask.store import DagRun, Store
from sched_support import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline_dag.py"
EXECUTORS = {
    "LocalExecutor": {"AIRDASK__CORE__EXECUTOR": "LocalExecutor"},
    "embedded Dask": {"AIRDASK__CORE__EXECUTOR": "DaskExecutor", "AIRDASK__DASK__N_WORKERS": "1"},
}


def runs_of(home: Path) -> list[DagRun]:
    if not (home / "airdask.db").exists():
        return []
    store = Store.from_config(load_config({"AIRDASK_HOME": str(home)}))
    try:
        with store.session() as session:
            return list(session.scalars(select(DagRun)))
    finally:
        store.dispose()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("executor", sorted(EXECUTORS))
def test_run_with_conf_template_and_result(executor: str, home: Path, tmp_path: Path) -> None:
    env = EXECUTORS[executor]
    report = tmp_path / "report.txt"
    conf = json.dumps({"n": 4, "report": str(report)})
    result = cli("run", str(EXAMPLE), "--conf", conf, home=home, env=env, timeout=200)
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = runs_of(home)
    assert run.conf == {"n": 4, "report": str(report)}
    ds = run.logical_date.strftime("%Y-%m-%d")
    expected = f"day {ds}: 4 rows, scale 10, run {run.run_id}"
    assert report.read_text() == expected + "\n"

    kept = cli("tasks", "result", "pipeline", "summarise", run.run_id, home=home)
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout) == {"rows": 4, "total": 10 * (0 + 1 + 4 + 9)}
    rows = cli("tasks", "result", "pipeline", "extract", run.run_id, home=home)
    assert json.loads(rows.stdout)[3] == {"id": 3, "value": 9}

    rendered = cli("tasks", "render", "pipeline", "report", run.run_id, home=home)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.startswith("[airdask] command: bash -c ")
    assert expected in rendered.stdout
    python = cli("tasks", "render", "pipeline", "summarise", run.run_id, home=home)
    assert python.stdout.startswith("[airdask] calling summarise([{'id': 0, 'value': 0}, ")
    assert python.stdout.strip().endswith("]) + the run context")
    logs = cli("tasks", "logs", "pipeline", "report", run.run_id, home=home)
    assert logs.stdout.splitlines()[0] == rendered.stdout.strip()
    extract_log = cli("tasks", "logs", "pipeline", "extract", run.run_id, home=home)
    assert f"extracting 4 rows for {ds} (run {run.run_id}, try 1)" in extract_log.stdout

    none = cli("tasks", "result", "pipeline", "report", run.run_id, home=home)
    assert none.returncode == 1
    assert "only a PythonTask's is kept" in none.stderr and len(none.stderr.splitlines()) == 1


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("conf", "error"),
    [
        ('{"n": "four"}', "DAG 'pipeline': param 'n' must be int, got str 'four'"),
        ('{"rows": 1}', "DAG 'pipeline': unknown param 'rows' in conf (params: n, scale, report)"),
    ],
)
def test_bad_conf_is_one_line_and_writes_nothing(
    conf: str, error: str, home: Path, tmp_path: Path
) -> None:
    result = cli("run", str(EXAMPLE), "--conf", conf, home=home)
    assert result.returncode != 0
    assert result.stderr.strip().endswith(error) and len(result.stderr.strip().splitlines()) == 1
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(EXAMPLE, dags / EXAMPLE.name)
    env = {"AIRDASK__CORE__DAGS_FOLDER": str(dags)}
    assert cli("db", "init", home=home, env=env).returncode == 0
    trigger = cli("dags", "trigger", "pipeline", "--conf", conf, home=home, env=env)
    assert trigger.returncode != 0 and trigger.stderr.strip().endswith(error)
    assert runs_of(home) == []
