"""The scheduler loop in-process, on a real SQLite store with the local executors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from airdask.config import Config
from airdask.dag import DAG, BashTask, PythonTask
from airdask.executors import load_executor
from airdask.executors.events import EventInfo
from airdask.scheduler.events import apply_events
from airdask.scheduler.loop import SchedulerJob
from airdask.scheduler.runs import RunError, create_run, fail_run, start_run
from airdask.state import TaskInstanceState, can_transition, coerce_state
from airdask.store import DagRun, Pool, Store, TaskInstance
from sched_support import log_events, make_store, run_dag, run_state, tis_of
from task_funcs import append_line, ledger_task, max_concurrency, start_order

S = TaskInstanceState
CALLS: list[dict[str, Any]] = []


@pytest.fixture
def store(config: Config) -> Store:
    return make_store(config)


def test_dependencies_retries_and_upstream_failed(store: Store, config: Config) -> None:
    with DAG("mixed") as dag:
        start = BashTask("start", "echo start")
        ok = BashTask("ok", "echo ok")
        bad = BashTask("bad", "echo failing; exit 3", retries=1, retry_delay=0)
        after_bad = BashTask("after_bad", "echo never")
        after_after = BashTask("after_after", "echo never either")
        cleanup = BashTask("cleanup", "echo cleanup", trigger_rule="all_done")
        on_fail = BashTask("on_fail", "echo handling", trigger_rule="one_failed")
        no_fail = BashTask("no_fail", "echo skipped", trigger_rule="none_failed")
        start >> [ok, bad]
        bad >> after_bad >> after_after
        [ok, bad] >> cleanup
        [ok, bad] >> on_fail
        ok >> no_fail
    state, tis = run_dag(store, config, dag)
    got = {t: ti.state for t, ti in tis.items()}
    assert got == {
        "start": "success",
        "ok": "success",
        "bad": "failed",
        "after_bad": "upstream_failed",
        "after_after": "upstream_failed",
        "cleanup": "success",
        "on_fail": "success",
        "no_fail": "success",
    }
    assert state == "failed"  # leaf after_after is upstream_failed
    assert tis["bad"].try_number == 2 and tis["bad"].max_tries == 1
    assert tis["bad"].reason == "exit code 3"
    assert "trigger rule all_success" in (tis["after_bad"].reason or "")
    assert tis["ok"].try_number == 1 and tis["ok"].duration is not None
    assert tis["ok"].hostname and tis["ok"].start_date and tis["ok"].end_date
    bad_logs = [(e.event, e.try_number) for e in log_events(store, "mixed", task_id="bad")]
    assert bad_logs == [("up_for_retry", 1), ("failed", 2)]
    assert tis["after_after"].try_number == 0  # never ran


def test_only_leaves_decide_the_run_state(store: Store, config: Config) -> None:
    with DAG("leaves") as dag:
        BashTask("bad", "exit 1") >> BashTask("cleanup", "true", trigger_rule="all_done")
    state, tis = run_dag(store, config, dag)
    assert (tis["bad"].state, tis["cleanup"].state) == ("failed", "success")
    assert state == "success"  # a failed task that is not a leaf does not fail the run


def test_retry_succeeds_on_second_try_with_delay(
    store: Store, config: Config, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    script = f"if [ -e {marker} ]; then echo second; else touch {marker}; exit 1; fi"
    with DAG("retry") as dag:
        BashTask("flaky", script, retries=2, retry_delay=0.3)
    state, tis = run_dag(store, config, dag)
    assert state == "success"
    ti = tis["flaky"]
    assert (ti.state, ti.try_number) == ("success", 2)
    events = log_events(store, "retry", task_id="flaky")
    assert [e.event for e in events] == ["up_for_retry", "success"]
    gap = (events[1].dttm - events[0].dttm).total_seconds()
    assert gap >= 0.25  # retry_delay (0.3 s from the failure) respected


def test_pool_of_two_is_never_exceeded(store: Store, config: Config, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    with store.session() as session:
        session.add(Pool(name="two", slots=2))
    with DAG("pooled") as dag:
        for i in range(8):
            PythonTask(f"t{i}", ledger_task, op_args=[ledger, f"t{i}", 0.3], pool="two")
        BashTask("free", "true")
    state, tis = run_dag(store, config, dag, executor="LocalExecutor", parallelism=6)
    assert state == "success"
    assert max_concurrency(ledger) == 2
    assert all(ti.state == "success" for ti in tis.values())


def test_pool_slots_count_per_task(store: Store, config: Config, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    with store.session() as session:
        session.add(Pool(name="three", slots=3))
    with DAG("heavy") as dag:
        for i in range(4):
            PythonTask(
                f"h{i}", ledger_task, op_args=[ledger, f"h{i}", 0.2], pool="three", pool_slots=2
            )
    state, _ = run_dag(store, config, dag, executor="LocalExecutor", parallelism=4)
    assert state == "success"
    assert max_concurrency(ledger) == 1  # two tasks would need 4 of 3 slots


def test_priority_order_highest_first(store: Store, config: Config, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    with DAG("prio") as dag:
        for name, weight in [("low", 1), ("high", 50), ("mid", 10), ("top", 99)]:
            PythonTask(name, ledger_task, op_args=[ledger, name, 0], priority_weight=weight)
    state, _ = run_dag(store, config, dag)  # SequentialExecutor: one slot
    assert state == "success"
    assert start_order(ledger) == ["top", "high", "mid", "low"]


def remember(context: dict[str, Any]) -> None:
    CALLS.append({k: context[k] for k in ("task_id", "state", "try_number", "reason", "conf")})


def explode(context: dict[str, Any]) -> None:
    raise RuntimeError("callback bug")


def test_callbacks_run_in_scheduler_and_errors_are_not_fatal(store: Store, config: Config) -> None:
    CALLS.clear()
    with DAG("cb") as dag:
        good = BashTask("good", "true", on_success_callback=remember)
        bad = BashTask("bad", "exit 1", on_failure_callback=remember)
        boom = BashTask("boom", "true", on_success_callback=explode)
        good >> bad
        good >> boom
    state, tis = run_dag(store, config, dag, conf={"x": 1})
    assert state == "failed"
    assert tis["boom"].state == "success"
    assert sorted((c["task_id"], c["state"]) for c in CALLS) == [
        ("bad", "failed"),
        ("good", "success"),
    ]
    assert all(c["conf"] == {"x": 1} for c in CALLS)
    failed = log_events(store, "cb", event="callback_failed")
    assert [(e.task_id, e.extra) for e in failed] == [
        ("boom", "on_success_callback: RuntimeError: callback bug")
    ]


def test_execution_timeout_fails_the_try(store: Store, config: Config) -> None:
    with DAG("slow") as dag:
        BashTask("sleepy", "sleep 30", execution_timeout=timedelta(seconds=0.5))
    state, tis = run_dag(store, config, dag, executor="LocalExecutor", parallelism=1)
    assert state == "failed"
    assert "timed out after 0.5s" in (tis["sleepy"].reason or "")


def test_unknown_pool_and_oversized_pool_slots_are_refused(store: Store) -> None:
    with store.session() as session:
        session.add(Pool(name="small", slots=1))
    with DAG("typo") as dag:
        BashTask("a", "true", pool="smal")
        BashTask("b", "true", pool="small", pool_slots=2)
    with pytest.raises(RunError) as info, store.session() as session:
        create_run(session, dag)
    assert "unknown pool 'smal'" in str(info.value)
    assert "needs 2 slots of pool 'small', which has only 1" in str(info.value)


def test_events_that_contradict_the_db_are_ignored(store: Store, config: Config) -> None:
    with DAG("contra") as dag:
        BashTask("t", "true", retries=1, retry_delay=0)
    state, tis = run_dag(store, config, dag)
    assert state == "success"
    ti = tis["t"]
    stale = ti.key.with_try_number(7)
    with store.session() as session:
        out = apply_events(
            session,
            {stale: (S.FAILED, EventInfo("late failure", kind="exit_code"))},
            retry_delay=lambda ti: 0.0,
        )
        again = apply_events(
            session,
            {ti.key: (S.FAILED, EventInfo("duplicate", kind="exit_code"))},
            retry_delay=lambda ti: 0.0,
        )
    assert out.ignored == 1 and again.ignored == 1
    assert tis_of(store, "contra", ti.run_id)["t"].state == "success"
    ignored = log_events(store, "contra", event="event_ignored")
    assert "try 7 failed (late failure) but the database has try 1 in state success" in (
        ignored[0].extra or ""
    )


def test_outcome_unknown_is_retried_without_charging_a_try(store: Store, config: Config) -> None:
    with DAG("lost") as dag:
        BashTask("t", "true", retries=1, retry_delay=0)
        BashTask("u", "true")
    # Never started nor heartbeaten: the test plays the executor's part with real events.
    executor = load_executor("LocalExecutor", config=config, parallelism=4)
    job = SchedulerJob(store=store, executor=executor, config=config, dags={"lost": dag})
    job.register()
    with store.session() as session:
        run_id = create_run(session, dag, scheduled_by_job_id=job.job_id).run_id
    job.run_filter = [("lost", run_id)]
    job.executor_started = True
    job.start()
    with store.session() as session:
        job._start_queued_runs(session)
        job._evaluate_dirty(session, job._take_dirty())
        queued = job._queue_ready(session)
    assert {ti.task_id for ti, _ in queued} == {"t", "u"}
    lost = EventInfo("scheduler-connection-lost", kind="connection_lost")
    with store.session() as session:
        apply_events(
            session,
            {ti.key: (S.FAILED, lost) for ti, _ in queued},
            retry_delay=lambda ti: 0.0,
        )
    tis = tis_of(store, "lost", run_id)
    # u has no retries, and is tried again all the same: an outage is not its fault
    assert tis["t"].state == tis["u"].state == "up_for_retry"
    assert (tis["t"].max_tries, tis["u"].max_tries) == (2, 1)
    assert (tis["u"].reason or "").startswith("outcome unknown, retried without charging a try")
    job.stop()


def test_broken_dag_file_fails_the_run_not_the_scheduler(
    store: Store, config: Config, tmp_path: Path
) -> None:
    dag_file = tmp_path / "gone.py"
    dag_file.write_text(
        "from airdask.dag import DAG, BashTask\nwith DAG('gone') as d:\n    BashTask('t', 'true')\n"
    )
    from airdask.dagbag import DagBag

    dag = DagBag.from_path(dag_file).dags["gone"]
    with store.session() as session:
        run_id = create_run(session, dag).run_id
    dag_file.write_text("raise RuntimeError('edited badly')\n")
    executor = load_executor("SequentialExecutor", config=config)
    job = SchedulerJob(store=store, executor=executor, config=config)
    job.register()
    job.start()
    job.run_once()
    job.stop()
    from sched_support import run_state

    assert run_state(store, "gone", run_id) == "failed"
    events = log_events(store, "gone", event="run_failed")
    assert "edited badly" in (events[0].extra or "")


def test_python_task_and_conf_free_run(store: Store, config: Config, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    with DAG("py") as dag:
        PythonTask("write", append_line, op_args=[out, "hello from a worker"])
    state, _ = run_dag(store, config, dag, executor="LocalExecutor", parallelism=2)
    assert state == "success"
    assert Path(out).read_text() == "hello from a worker\n"


def test_edited_dag_file_is_reloaded(store: Store, config: Config) -> None:
    import os

    from airdask.dagbag import DagBag
    from sched_support import run_state

    folder = Path(config.core.dags_folder)
    folder.mkdir(parents=True)
    path = folder / "edit.py"
    body = (
        "from airdask.dag import DAG, BashTask\nwith DAG('edit') as d:\n    BashTask('a', 'true')\n"
    )
    path.write_text(body)
    executor = load_executor("SequentialExecutor", config=config)
    job = SchedulerJob(store=store, executor=executor, config=config)
    job.start()

    def run_to_end() -> str:
        with store.session() as session:
            run_id = create_run(session, DagBag.from_path(path).dags["edit"]).run_id
        for _ in range(50):
            job.run_once()
            if run_state(store, "edit", run_id) in ("success", "failed"):
                break
        return run_id

    first = run_to_end()
    path.write_text(body + "    BashTask('b', 'true')\n")
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 5))
    job.dag_cache.refresh(every=0.0)
    second = run_to_end()
    job.stop()
    assert set(tis_of(store, "edit", first)) == {"a"}
    assert {t: ti.state for t, ti in tis_of(store, "edit", second).items()} == {
        "a": "success",
        "b": "success",
    }


def test_dag_cache_reloads_an_edited_file_at_once(tmp_path: Path) -> None:
    import os

    from airdask.scheduler.dagcache import DagCache

    path = tmp_path / "edit.py"
    body = "from airdask.dag import DAG, BashTask\n"
    body += "with DAG('edit') as d:\n    BashTask('a', 'true')\n"

    def write(text: str, bump: float) -> None:
        path.write_text(text)
        stat = path.stat()
        os.utime(path, (stat.st_atime, stat.st_mtime + bump))

    write(body, 0)
    cache = DagCache(dags_folder=str(tmp_path))
    assert cache.get("edit") is not None
    write(body + "    BashTask('b', 'true')\n", 5)
    cache.refresh(every=0.0)
    # no window in which readers of ``dags`` find the DAG missing
    assert cache.dags["edit"].has_task("b")
    write("raise RuntimeError('broken')\n", 10)
    cache.refresh(every=0.0)
    assert "edit" not in cache.dags and "broken" in cache.errors["edit"]


def test_fail_run_moves_task_instances_through_the_transition_table(store: Store) -> None:
    with DAG("doomed") as dag:
        for name in ("never", "ready", "retrying", "live", "done"):
            BashTask(name, "true")
    with store.session() as session:
        run = create_run(session, dag)
        start_run(session, run, dag)
        session.flush()
        before = {"ready": "scheduled", "retrying": "up_for_retry", "live": "running"}
        before["done"] = "success"
        for ti in session.scalars(select(TaskInstance).where(TaskInstance.run_id == run.run_id)):
            ti.state = before.get(ti.task_id)
        run_id = run.run_id
    with store.session() as session:
        fail_run(session, session.get(DagRun, ("doomed", run_id)), "DAG file gone")  # type: ignore[arg-type]
    tis = tis_of(store, "doomed", run_id)
    after = {t: ti.state for t, ti in tis.items()}
    # never ran: skipped (as Airflow's "mark failed" does); its try failed: failed; the live
    # attempt finishes and is recorded; nothing changes against the table
    assert after == {
        "never": "skipped",
        "ready": "skipped",
        "retrying": "failed",
        "live": "running",
        "done": "success",
    }
    for task, state in after.items():
        assert can_transition(coerce_state(before.get(task)), coerce_state(state)), task
    assert {tis[t].reason for t in ("never", "ready", "retrying")} == {"DAG file gone"}
    assert run_state(store, "doomed", run_id) == "failed"
