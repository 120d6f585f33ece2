"""Incremental trigger rules (scheduler/readiness.py, ADR 0011): the same decisions as a
full read of the run, at the cost of what changed."""

from __future__ import annotations

import random
import time

import pytest
from sqlalchemy import event, update

from airdask.config import Config
from airdask.dag import DAG, BashTask, PythonTask
from airdask.executors import load_executor
from airdask.scheduler import jobs, loop
from airdask.scheduler.events import set_state, watch_states
from airdask.scheduler.loop import SchedulerJob
from airdask.scheduler.readiness import Readiness, RunReadiness, topological_index
from airdask.scheduler.runs import create_run, start_run
from airdask.state import TaskInstanceState
from airdask.store import Job, TaskInstance
from sched_support import make_store, tis_of

S = TaskInstanceState
RULES = ["all_success", "all_done", "one_success", "one_failed", "none_failed", "all_failed",
         "none_skipped", "none_failed_min_one_success", "one_done", "always"]  # fmt: skip


def tracker(dag: DAG, states: dict[str, str | None]) -> RunReadiness:
    rows = [(task_id, -1, state) for task_id, state in states.items()]
    return RunReadiness(dag, "r", rows, topological_index(dag))


def decide(run: RunReadiness) -> list[tuple[str, str]]:
    return [(d.task_id, d.state) for d in run.evaluate(_no_expansion)]


def _no_expansion(task: object) -> tuple[str, int]:
    raise AssertionError(f"{task} is not mapped over a result")


def test_a_failure_cascades_in_one_evaluation() -> None:
    with DAG("chain") as dag:
        a, b, c = BashTask("a", "true"), BashTask("b", "true"), BashTask("c", "true")
        d = BashTask("d", "true", trigger_rule="all_done")
        a >> b >> c >> d
    run = tracker(dag, dict.fromkeys(dag.task_dict, None))
    assert decide(run) == [("a", "scheduled")]
    run.note("a", -1, "failed")
    got = [(x.task_id, x.state, x.ends) for x in run.evaluate(_no_expansion)]
    assert got == [
        ("b", "upstream_failed", True),
        ("c", "upstream_failed", True),
        ("d", "scheduled", False),
    ]


def test_a_fan_in_is_counted_not_read_again() -> None:
    with DAG("fan") as dag:
        middle = [BashTask(f"m{i}", "true") for i in range(1000)]
        end = BashTask("end", "true")
        middle >> end
    run = tracker(dag, {**dict.fromkeys(dag.task_dict, "scheduled"), "end": None})
    assert decide(run) == []
    for task in middle[:-1]:
        run.note(task.task_id, -1, "success")
    assert run.candidates == {"end"}  # only the downstream of what changed
    assert decide(run) == []
    assert run.slots["end"][0] == 999
    run.note("m999", -1, "success")
    run.note("m999", -1, "success")  # a second report of a finished one does not count twice
    assert decide(run) == [("end", "scheduled")]


def test_a_task_gone_from_the_dag_is_removed() -> None:
    with DAG("gone") as dag:
        BashTask("a", "true")
    run = tracker(dag, {"a": "success", "old": None})
    assert decide(run) == [("old", "removed")]


def test_a_mapped_upstream_counts_every_instance() -> None:
    with DAG("mapped") as dag:
        wide = BashTask("wide", 'echo "$1"').expand(args=[1, 2, 3])
        wide >> BashTask("end", "true")
    rows = [("wide", i, "scheduled") for i in range(3)] + [("end", -1, None)]
    run = RunReadiness(dag, "r", rows, topological_index(dag))
    assert decide(run) == [] and run.totals["end"] == 3
    run.note("wide", 0, "success")
    run.note("wide", 1, "success")
    assert decide(run) == []
    run.note("wide", 2, "failed")
    assert decide(run) == [("end", "upstream_failed")]


def test_a_run_read_midway_counts_what_its_upstreams_did() -> None:
    """Upstreams already finished when the run is read: unmapped ones, and mapped ones with
    some instances finished (one of them mapped over a single item)."""
    with DAG("midway") as dag:
        a, b = BashTask("a", "true"), BashTask("b", "true")
        wide = BashTask("wide", 'echo "$1"').expand(args=[1, 2, 3])
        one = BashTask("one", 'echo "$1"').expand(args=[1])
        end = BashTask("end", "true", trigger_rule="all_done")
        [a, b, wide, one] >> end
    rows = [
        ("a", -1, "success"),
        ("b", -1, "failed"),
        ("wide", 0, "success"),
        ("wide", 1, "skipped"),
        ("wide", 2, "running"),
        ("one", 0, "upstream_failed"),
        ("end", -1, None),
    ]
    run = RunReadiness(dag, "r", rows, topological_index(dag))
    # success, skipped, failed, upstream_failed, removed; out of 6 instances
    assert run.slots["end"] == [2, 1, 1, 1, 0] and run.totals["end"] == 6
    assert decide(run) == []
    run.note("wide", 2, "success")
    assert decide(run) == [("end", "scheduled")]


def test_instances_made_from_a_result_are_counted_downstream() -> None:
    with DAG("from_result") as dag:
        nums = PythonTask("nums", list, op_args=[range(4)])
        each = PythonTask("each", print).expand(op_args=nums.output)
        nums >> each >> BashTask("end", "true")
    rows = [("nums", -1, "scheduled"), ("each", -1, None), ("end", -1, None)]
    run = RunReadiness(dag, "r", rows, topological_index(dag))
    assert decide(run) == []
    run.note("nums", -1, "success")
    made = [d for d in run.evaluate(lambda task: ("scheduled", 4))]
    assert [(d.task_id, d.state, d.count, d.written) for d in made] == [
        ("each", "scheduled", 4, True)
    ]
    assert run.totals["end"] == 4
    assert run.instance_count == 1 + 4 + 1  # the placeholder became 4
    for i in range(4):
        run.note("each", i, "success")
    assert decide(run) == [("end", "scheduled")]
    assert run.unfinished()  # end has not run


def _random_dag(rng: random.Random, n: int) -> DAG:
    with DAG("rand") as dag:
        tasks = [BashTask(f"t{i:02d}", "true", trigger_rule=rng.choice(RULES)) for i in range(n)]
    for i, task in enumerate(tasks[1:], start=1):
        for up in rng.sample(tasks[:i], k=min(i, rng.randint(0, 3))):
            up >> task
    return dag


def test_incremental_decisions_equal_a_full_read_of_the_run() -> None:
    rng = random.Random(12)
    for _ in range(40):
        dag = _random_dag(rng, 25)
        states: dict[str, str | None] = dict.fromkeys(dag.task_dict, None)
        run = tracker(dag, states)
        while True:
            for decided in run.evaluate(_no_expansion):
                states[decided.task_id] = decided.state
            # a tracker built now from the states decides nothing more: none was missed
            assert decide(tracker(dag, states)) == []
            ready = sorted(t for t, s in states.items() if s == "scheduled")
            if not ready:
                break
            for task_id in rng.sample(ready, k=rng.randint(1, len(ready))):
                states[task_id] = rng.choice(["success", "failed"])
                run.note(task_id, -1, states[task_id])
        assert all(s not in (None, "scheduled") for s in states.values()), states


def _job(store: object, config: Config, dag: DAG) -> tuple[SchedulerJob, str]:
    executor = load_executor("SequentialExecutor", config=config)
    job = SchedulerJob(store=store, executor=executor, config=config, dags={dag.dag_id: dag})  # type: ignore[arg-type]
    job.start()
    with job.store.session() as session:
        run_id = create_run(session, dag).run_id
        job._start_queued_runs(session)
        job._evaluate_dirty(session, job._take_dirty())
    return job, run_id


def _write_state(job: SchedulerJob, run_id: str, task_id: str, state: str) -> None:
    """Another writer (a second scheduler) changes a task instance."""
    with job.store.session() as session:
        session.execute(
            update(TaskInstance)
            .where(TaskInstance.run_id == run_id, TaskInstance.task_id == task_id)
            .values(state=state)
        )


def test_writes_of_another_scheduler_are_read_when_not_alone(config: Config) -> None:
    store = make_store(config)
    with DAG("two") as dag:
        BashTask("a", "true") >> BashTask("b", "true")
    job, run_id = _job(store, config, dag)
    assert tis_of(store, "two", run_id)["a"].state == "scheduled"
    _write_state(job, run_id, "a", "success")
    with store.session() as session:  # alone: its own counts are trusted, a is not read
        job._evaluate_dirty(session, {("two", run_id)})
    assert tis_of(store, "two", run_id)["b"].state is None
    with store.session() as session:  # another scheduler is alive: runs are read again
        other = Job(job_type=jobs.SCHEDULER, state="running", hostname="elsewhere", pid=1)
        session.add(other)
        session.flush()
        job._check_alone(session)
        assert not job.readiness.trusted
        job._evaluate_dirty(session, {("two", run_id)})
    assert tis_of(store, "two", run_id)["b"].state == "scheduled"
    with store.session() as session:
        session.execute(update(Job).where(Job.id == other.id).values(state="success"))
        job._check_alone(session)
    assert job.readiness.trusted
    job.stop()


def test_the_orphan_check_reads_every_running_run_again(config: Config) -> None:
    store = make_store(config)
    with DAG("sweep") as dag:
        BashTask("a", "true") >> BashTask("b", "true")
    job, run_id = _job(store, config, dag)
    _write_state(job, run_id, "a", "success")
    job._recover(force=True)
    with store.session() as session:
        job._evaluate_dirty(session, job._take_dirty())
    assert tis_of(store, "sweep", run_id)["b"].state == "scheduled"
    job.stop()


def test_a_run_is_read_once_then_followed(config: Config) -> None:
    store = make_store(config)
    with DAG("once") as dag:
        BashTask("a", "true") >> BashTask("b", "true")
    job, run_id = _job(store, config, dag)
    assert isinstance(job.readiness, Readiness)
    assert job.readiness.runs[("once", run_id)].waiting == {"b": 1}
    job.stop()


def test_every_state_change_reaches_readiness_by_itself(config: Config) -> None:
    """No writer has to tell readiness: any assignment of ``TaskInstance.state`` (through
    set_state or not) made while the scheduler watches is noted when it moves forward, and
    drops the run when it goes back to waiting. Nothing is written to the database here, so
    only what readiness heard can decide b."""
    store = make_store(config)
    with DAG("heard") as dag:
        BashTask("a", "true") >> BashTask("b", "true")
    readiness = Readiness()
    with store.session() as session:
        run = create_run(session, dag)
        start_run(session, run, dag)
        run_id = run.run_id
        assert readiness.evaluate(session, dag, run_id) == (1, False)  # a scheduled
    with store.session() as session:
        ti = session.get(TaskInstance, ("heard", "a", run_id, -1))
        assert ti is not None and ti.state == "scheduled"
        session.expunge(ti)
    ti.state = "queued"  # not watched: not heard
    assert readiness.runs[("heard", run_id)].slots["b"] == [0, 0, 0, 0, 0]
    with watch_states(readiness):
        set_state(ti, S.RUNNING)
        ti.state = "success"  # a writer that bypasses set_state is heard all the same
    with store.session() as session:
        assert readiness.evaluate(session, dag, run_id) == (1, False)
    assert tis_of(store, "heard", run_id)["b"].state == "scheduled"
    with watch_states(readiness):
        ti.state = None  # back to waiting (a reset): the run is read again when evaluated
    assert ("heard", run_id) not in readiness.runs


def test_a_run_readiness_proves_unfinished_is_not_read_to_finish_it(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finishing reads a run's end only when readiness cannot prove work is left, and reads
    every running run's end at least every FINISH_RECHECK_SECONDS, so that counts gone wrong
    delay a run's end and never keep it running."""
    store = make_store(config)
    with DAG("ends") as dag:
        BashTask("a", "true") >> BashTask("b", "true")
    job, run_id = _job(store, config, dag)
    key = ("ends", run_id)
    reads: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "FROM dag_run" in statement:
            reads.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    job._finish_checked = time.monotonic()  # the recheck is not due
    assert job.readiness.surely_unfinished(key)
    with store.session() as session:
        assert job._finish_runs(session, {key}) == {}
    assert reads == []
    # Another writer finishes both (readiness does not hear it): the run ends at the recheck.
    _write_state(job, run_id, "a", "success")
    _write_state(job, run_id, "b", "success")
    assert job.readiness.surely_unfinished(key)
    with store.session() as session:
        assert job._finish_runs(session, {key}) == {}
    monkeypatch.setattr(loop, "FINISH_RECHECK_SECONDS", 0.0)
    with store.session() as session:
        assert job._finish_runs(session, {key}) == {key: "success"}
    assert reads
    event.remove(store.engine, "before_cursor_execute", count)
    job.stop()


def test_a_run_whose_last_instance_finished_is_not_proven_unfinished() -> None:
    with DAG("last") as dag:
        BashTask("a", "true") >> BashTask("b", "true")
    run = RunReadiness(
        dag, "r", [("a", -1, "success"), ("b", -1, "running")], topological_index(dag)
    )
    assert run.unfinished()
    run.note("b", -1, "failed")
    assert not run.unfinished()
