"""Rich HTML representations for notebooks: escaped, complete, Airflow's colours."""

from __future__ import annotations

from airdask.display import counts_html, dag_run_html, executor_html, table_html


def test_executor_html_shows_status_link_resources_and_counts() -> None:
    text = executor_html(
        name="DaskExecutor",
        status="running",
        dashboard_link="http://127.0.0.1:8787/status",
        scheduler_address="tcp://127.0.0.1:8786",
        workers=2,
        resources={"gpu": 1, "warehouse": 4},
        counts={"running": 2, "queued": 1},
    )
    assert '<a href="http://127.0.0.1:8787/status"' in text
    assert "gpu=1, warehouse=4" in text and "tcp://127.0.0.1:8786" in text
    assert text.index(">queued</span>") < text.index(">running</span>")  # Airflow order
    assert "<i>none</i>" in executor_html(name="X", status="not started", resources={})


def test_dag_run_html_lists_tasks_and_escapes_everything() -> None:
    text = dag_run_html(
        dag_id="etl",
        run_id="manual__<1>",
        state="failed",
        tasks=[
            {"task_id": "extract", "state": "success", "try_number": 1, "duration": 0.51234},
            {"task_id": "load", "state": "failed", "try_number": 2, "reason": "exit <3> & more"},
            {"task_id": "report", "state": None},
        ],
    )
    assert "manual__&lt;1&gt;" in text and "exit &lt;3&gt; &amp; more" in text
    assert "0.51 s" in text and text.count("<tr>") == 4
    assert ">none</span>&nbsp;1" in text and ">failed</span>&nbsp;1" in text


def test_tables_and_counts() -> None:
    assert counts_html({}) == "<i>none</i>"
    assert counts_html({"weird": 2}).endswith("&nbsp;2")
    html = table_html(["a", "state"], [("<x>", "running")], state_column="state")
    assert "&lt;x&gt;" in html and "background:#32cd32" in html
