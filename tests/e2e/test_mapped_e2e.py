"""Mapped tasks through ``airdask run`` on LocalExecutor and on the embedded Dask cluster."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select

from airdask.store import DagRun, TaskInstance
from e2e.test_schedules_cli import store_for
from sched_support import cli

EXECUTORS = {
    "local": {"AIRDASK__CORE__EXECUTOR": "LocalExecutor", "AIRDASK__CORE__PARALLELISM": "4"},
    "embedded-dask": {
        "AIRDASK__DASK__DASHBOARD_ADDRESS": "127.0.0.1:0",
        "AIRDASK__DASK__N_WORKERS": "2",
        "AIRDASK__DASK__THREADS_PER_WORKER": "2",
    },
}


def mapped_dag(path: Path, out: Path) -> Path:
    path.write_text(
        textwrap.dedent(
            f"""
            import os
            from airdask.dag import DAG, BashTask, PythonTask

            OUT = {str(out)!r}

            def record(item):
                marker = f"{{OUT}}.failed-{{item}}"
                if item == "b" and not os.path.exists(marker):
                    open(marker, "w").close()
                    raise RuntimeError("the first try of b fails")
                with open(OUT, "a") as fh:
                    fh.write(f"py {{item}}\\n")

            def parts():
                return ["p1", "p22"]

            def size(part):
                return len(part)

            def total(sizes):
                with open(OUT + ".total", "w") as fh:
                    fh.write(str(sum(sizes)))

            with DAG("mapped_e2e") as dag:
                files = BashTask("files", 'echo "sh $1" >> {out}').expand(args=["x.csv", "y z.csv"])
                each = PythonTask("each", record, retries=1, retry_delay=0).expand(
                    op_args=["a", "b", "c"]
                )
                done = BashTask("done", 'echo "done" >> {out}')
                [files, each] >> done
                found = PythonTask("parts", parts)
                sizes = PythonTask("size", size).expand(op_args=found.output)
                summed = PythonTask("total", total, op_args=[sizes])
                summed >> done
            """
        )
    )
    return path


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("executor", sorted(EXECUTORS))
def test_mapped_run_end_to_end(tmp_path: Path, executor: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "out.txt"
    dag_file = mapped_dag(tmp_path / "mapped.py", out)
    result = cli("run", str(dag_file), home=home, env=EXECUTORS[executor])
    assert result.returncode == 0, result.stdout + result.stderr
    for label in ("files[0]", "files[1]", "each[0]", "each[1]", "each[2]", "size[1]", "done"):
        assert label in result.stdout, label
    lines = out.read_text().splitlines()
    assert sorted(lines[:-1]) == ["py a", "py b", "py c", "sh x.csv", "sh y z.csv"]
    assert lines[-1] == "done"  # after every instance of both mapped tasks
    with store_for(home).session() as session:
        run_id = session.scalars(select(DagRun.run_id)).one()
        tis = {
            (ti.task_id, ti.map_index): ti
            for ti in session.scalars(select(TaskInstance).where(TaskInstance.run_id == run_id))
        }
    assert len(tis) == 6 + 1 + 2 + 1  # parts, size[0..1], total
    assert (tmp_path / "out.txt.total").read_text() == "5"  # len("p1") + len("p22")
    assert tis[("each", 1)].try_number == 2 and tis[("each", 0)].try_number == 1
    assert {ti.state for ti in tis.values()} == {"success"}

    first = cli(
        "tasks", "logs", "mapped_e2e", "each", run_id, "--map-index", "1", "--try", "1", home=home
    )
    assert first.returncode == 0, first.stderr
    assert "the first try of b fails" in first.stdout
    unnamed = cli("tasks", "logs", "mapped_e2e", "each", run_id, home=home)
    assert unnamed.returncode == 1
    assert "is mapped in" in unnamed.stderr and "--map-index 0..2" in unnamed.stderr
