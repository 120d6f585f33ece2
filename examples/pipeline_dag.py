"""airdask pipeline: a run that knows where it is — params with defaults that ``--conf``
overrides, a templated command, and a Python result passed on to the next task.

::

    airdask run examples/pipeline_dag.py --conf '{"n": 4}'
    airdask tasks result pipeline summarise RUN_ID     # {"rows": 4, "total": 140}
    airdask tasks render pipeline report RUN_ID        # the command as it ran
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from airdask.dag import DAG, BashTask, Param, PythonTask

REPORT = str(Path(tempfile.gettempdir()) / "airdask-pipeline-report.txt")


def extract(context: dict[str, Any]) -> list[dict[str, int]]:
    """A callable with a ``context`` parameter is given the run context."""
    n = context["params"]["n"]
    print(f"extracting {n} rows for {context['ds']} (run {context['run_id']}, "
          f"try {context['try_number']})")  # fmt: skip
    return [{"id": i, "value": i * i} for i in range(n)]


def summarise(rows: list[dict[str, int]], **kwargs: Any) -> dict[str, int]:
    """Receives extract's return value (``op_args=[rows]`` below); ``**kwargs`` receives
    the run context's keys (``params``, ``ds``, ``run_id``...), as in Airflow."""
    total = kwargs["params"]["scale"] * sum(row["value"] for row in rows)
    print(f"{len(rows)} rows, total {total}")
    return {"rows": len(rows), "total": total}


with DAG(
    "pipeline",
    description="params, a templated command, a result passed on",
    params={
        "n": 3,  # a plain default: an int param
        "scale": 10,
        "report": Param(REPORT, type=str, description="where the report is written"),
    },
) as dag:
    rows = PythonTask("extract", extract)
    # Passing the task stands for its return value (and makes it upstream of this one).
    summary = PythonTask("summarise", summarise, op_args=[rows])
    # Rendered with Jinja when the attempt is queued; `airdask tasks render` shows the result.
    report = BashTask(
        "report",
        "echo 'day {{ ds }}: {{ params.n }} rows, scale {{ params.scale }}, "
        "run {{ run_id }}' > {{ params.report }}",
    )
    summary >> report
