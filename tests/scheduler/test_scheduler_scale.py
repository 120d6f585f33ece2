"""What keeps a large run's passes costing what changed (issue 12): the database side."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text, update

from airdask.dag import DAG, PythonTask
from airdask.executors.events import EventInfo
from airdask.scheduler.events import apply_events
from airdask.scheduler.runs import create_run, start_run
from airdask.state import TaskInstanceKey, TaskInstanceState
from airdask.store import Store, TaskInstance, init_db
from airdask.store.db import ANALYZE_MIN_ROWS
from sched_support import log_events, tis_of
from task_funcs import say

pytestmark = pytest.mark.timeout(120)
S = TaskInstanceState


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


def test_queued_events_record_external_ids_as_before(any_store: Store) -> None:
    """QUEUED events record their external ids (adoption looks them up); one about another
    job's task instance is not applied and says so, one about an older try is dropped, and
    the others of the same batch are recorded all the same."""
    init_db(any_store)
    with DAG("ids") as dag:
        for name in "abc":
            PythonTask(name, say, op_args=["hi"])
    with any_store.session() as session:
        run = create_run(session, dag)
        start_run(session, run, dag)
        run_id = run.run_id
        session.execute(
            update(TaskInstance)
            .where(TaskInstance.run_id == run_id)
            .values(state="queued", try_number=1, queued_by_job_id=7)
        )
        session.execute(
            update(TaskInstance).where(TaskInstance.task_id == "c").values(queued_by_job_id=8)
        )
    key = {name: TaskInstanceKey("ids", name, run_id, 1) for name in "abc"}

    def queued(ext: str) -> tuple[TaskInstanceState, EventInfo]:
        return (S.QUEUED, EventInfo("", kind="queued", external_executor_id=ext))

    batches = [
        {key["a"]: queued("a1"), key["b"]: queued("b1")},  # all apply
        {key["a"]: queued("a2"), key["c"]: queued("c1")},  # c is job 8's
        {key["b"].with_try_number(2): queued("b2")},  # not the try the database has
    ]
    ignored = []
    for events in batches:
        with any_store.session() as session:
            out = apply_events(session, events, retry_delay=lambda ti: 0.0, job_id=7)
            ignored.append(out.ignored)
    assert ignored == [0, 1, 0]  # job 8's is ignored; an older try's is dropped, not counted
    tis = tis_of(any_store, "ids", run_id)
    assert {name: tis[name].external_executor_id for name in "abc"} == {
        "a": "a2",
        "b": "b1",
        "c": None,
    }
    assert {ti.state for ti in tis.values()} == {"queued"}
    [ignored] = log_events(any_store, "ids", event="event_ignored")
    assert ignored.task_id == "c" and "now queued by job 8" in (ignored.extra or "")
