"""What keeps a large run's passes costing what changed (issue 12): the database side."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from airdask.dag import DAG, PythonTask
from airdask.scheduler.runs import create_run, start_run
from airdask.store import Store, init_db
from airdask.store.db import ANALYZE_MIN_ROWS
from task_funcs import say

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    store = Store.from_url(pg_url)
    init_db(store)
    yield store
    store.dispose()


def _plan(store: Store, run_id: str, task_id: str) -> str:
    with store.session() as session:
        rows = session.execute(
            text(
                "EXPLAIN UPDATE task_instance SET state = 'queued' WHERE dag_id = 'wide' "
                "AND task_id = :task_id AND run_id = :run_id AND map_index = -1"
            ),
            {"task_id": task_id, "run_id": run_id},
        )
        return "\n".join(row[0] for row in rows)


@pytest.mark.postgres
def test_a_large_run_updates_its_task_instances_by_primary_key(pg_store: Store) -> None:
    """Without fresh statistics PostgreSQL reads a run's every row to update one of them
    (through ix_ti_run_state): starting a large run analyzes the table, for this run and
    for the next one of the same DAG."""
    with DAG("wide") as dag:
        for i in range(ANALYZE_MIN_ROWS):
            PythonTask(f"t{i:05d}", say, op_args=["hi"])
    for _ in range(2):
        with pg_store.session() as session:
            run = create_run(session, dag)
            start_run(session, run, dag)
            run_id = run.run_id
        plan = _plan(pg_store, run_id, "t00007")
        assert "task_instance_pkey" in plan, plan
