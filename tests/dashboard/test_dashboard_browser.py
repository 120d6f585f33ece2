"""The airdask page in a real browser: headless Chromium loads the Dask dashboard of a running
cluster (a LocalCluster with the preload) and the airdask page, checks what it shows, and
that it follows the summaries published as task instances finish.

Skips when Chromium is missing, except under ``CI=true`` (``.ci/services.sh`` installs it).
Set ``AIRDASK_DASHBOARD_SCREENSHOT=docs/dashboard.png`` to keep the README screenshot.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client
from sqlalchemy import select, update

from airdask.config import Config
from airdask.dag import DAG, BashTask
from airdask.dashboard import preload
from airdask.dashboard.summary import SummaryPublisher, build_summary, publish_summary
from airdask.executors import load_executor
from airdask.scheduler.loop import SchedulerJob
from airdask.scheduler.runs import create_run
from airdask.store import DagRun, Log, Pool, Store, TaskInstance, init_db
from browser_support import Browser, find_chromium
from conftest import skip_or_fail
from dask_support import dashboard_root, preloaded_dashboard_client
from proc_support import wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = find_chromium()
    if executable is None:
        skip_or_fail("no chromium on PATH (apt-get install chromium)")
        raise AssertionError("unreachable")
    with Browser(executable, width=1400, height=660) as b:
        yield b


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with preloaded_dashboard_client(threads_per_worker=1) as c:
        yield c


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _row(text: str, *cells: str) -> bool:
    """Whether ``cells`` appear as consecutive text chunks (one table row) in the page.
    (Chart labels are drawn on a canvas: the tables are what the text can check.)"""
    lines = _lines(text)
    n = len(cells)
    return any(tuple(lines[i : i + n]) == cells for i in range(len(lines) - n + 1))


def _seed(store: Store) -> None:
    """A run in the middle of its work: pools in use, several states, events with reasons."""
    with store.session() as session:
        session.add(Pool(name="gpu", slots=2, description="the GPU box"))
        session.add(Pool(name="warehouse", slots=4, description="DB connections"))
        session.add(DagRun(dag_id="etl", run_id="manual__r1", state="running"))
        session.flush()
        for task_id, state, pool, slots in [
            ("extract", "success", "default_pool", 1),
            ("clean", "success", "default_pool", 1),
            ("train", "running", "gpu", 2),
            ("load", "running", "warehouse", 1),
            ("load_more", "queued", "warehouse", 1),
            ("report", None, "default_pool", 1),
            ("notify", "up_for_retry", "default_pool", 1),
        ]:
            session.add(
                TaskInstance(
                    dag_id="etl",
                    task_id=task_id,
                    run_id="manual__r1",
                    state=state,
                    pool=pool,
                    pool_slots=slots,
                    try_number=1,
                )
            )
        for event, task_id, reason in [
            ("success", "extract", "exit code 0"),
            ("success", "clean", "exit code 0"),
            ("up_for_retry", "notify", "exit code 7: SMTP server refused the connection"),
            ("running", "train", "started on tcp://127.0.0.1:40123"),
        ]:
            session.add(
                Log(
                    event=event,
                    dag_id="etl",
                    task_id=task_id,
                    run_id="manual__r1",
                    try_number=1,
                    extra=reason,
                )
            )


def _publish(store: Store, client: Client, seq: int) -> None:
    with store.session() as session:
        summary = build_summary(session)
    summary["seq"] = seq
    publish_summary(client, summary)


def test_page_shows_the_published_summary_and_follows_it(
    browser: Browser, client: Client, tmp_path: Path
) -> None:
    root = dashboard_root(client)
    # The Dask dashboard itself, with the link to our page.
    browser.goto(f"{root}/status")
    browser.wait_for_text(lambda t: "Airdask" in _lines(t) and "Workers" in t, what="status")

    client.set_metadata(["airdask", "summary"], None)
    browser.goto(f"{root}{preload.ROUTE}")
    browser.wait_for_text(lambda t: "no summary published yet" in t, what="the empty state")

    store = Store.from_url(f"sqlite:///{tmp_path}/airdask.db")
    init_db(store, default_pool_slots=16)
    _seed(store)
    _publish(store, client, 1)
    text = browser.wait_for_text(lambda t: "SMTP server refused" in t, what="the first summary")
    assert _row(text, "gpu", "2", "2", "0", "0", "the GPU box")
    assert _row(text, "warehouse", "4", "1", "1", "2", "DB connections")
    assert _row(text, "running", "2") and _row(text, "success", "2")
    assert _row(text, "up_for_retry", "1") and _row(text, "none", "1")
    assert "etl.notify" in _lines(text) and "task instances: 7" in text

    screenshot = tmp_path / "dashboard.png"
    browser.screenshot(screenshot)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("AIRDASK_DASHBOARD_SCREENSHOT")
    if keep:
        shutil.copyfile(screenshot, keep)

    # Tasks finish: the scheduler would write this; the page follows the next summary.
    with store.session() as session:
        session.execute(
            update(TaskInstance)
            .where(TaskInstance.task_id.in_(["train", "load", "load_more"]))
            .values(state="success")
        )
        session.execute(
            update(TaskInstance).where(TaskInstance.task_id == "report").values(state="failed")
        )
        session.add(
            Log(
                event="failed",
                dag_id="etl",
                task_id="report",
                run_id="manual__r1",
                try_number=1,
                extra="exit code 3: report template missing",
            )
        )
    _publish(store, client, 2)
    text = browser.wait_for_text(
        lambda t: (
            "report template missing" in t and _row(t, "gpu", "2", "0", "0", "2", "the GPU box")
        ),
        what="the summary after tasks finished",
    )
    assert _row(text, "success", "5") and _row(text, "failed", "1")
    assert _row(text, "gpu", "2", "0", "0", "2", "the GPU box"), text
    assert not _row(text, "running", "2")
    # Newest event first.
    lines = _lines(text)
    assert lines.index("exit code 3: report template missing") < lines.index(
        "exit code 7: SMTP server refused the connection"
    )
    store.dispose()


def test_page_follows_a_real_scheduler_as_tasks_finish(
    browser: Browser, client: Client, config: Config, tmp_path: Path
) -> None:
    """A SchedulerJob with the LocalExecutor publishes on every pass (as the scheduler loop
    does); a task holds until the test opens its gate, then the run finishes."""
    store = Store.from_config(config)
    init_db(store, default_pool_slots=16)
    gate = tmp_path / "gate"
    wait = f"for i in $(seq 600); do [ -e {gate} ] && exit 0; sleep 0.05; done; exit 1"
    with DAG("browser_demo") as dag:
        first = BashTask("first", "echo first")
        held = BashTask("held_task", wait)
        last = BashTask("last", "echo last")
        first >> held >> last
    job = SchedulerJob(
        store=store,
        executor=load_executor("LocalExecutor", config=config, parallelism=2),
        config=config,
        dags={dag.dag_id: dag},
    )
    job.register()
    with store.session() as session:
        run_id = create_run(session, dag, scheduled_by_job_id=job.job_id).run_id
    publisher = SummaryPublisher(interval=0.2)
    done = threading.Event()

    def run_state() -> str | None:
        with store.session() as session:
            return session.scalar(select(DagRun.state).where(DagRun.run_id == run_id))

    def loop() -> None:
        try:
            job.run(
                until=lambda: done.is_set() or run_state() in ("success", "failed"),
                on_pass=lambda _: publisher.maybe_publish(store.session, client),
                handle_signals=False,
            )
        finally:
            publisher.maybe_publish(store.session, client, force=True)
            done.set()

    thread = threading.Thread(target=loop, name="scheduler", daemon=True)
    thread.start()
    try:
        browser.goto(f"{dashboard_root(client)}{preload.INDIVIDUAL_ROUTE}")
        text = browser.wait_for_text(
            lambda t: "browser_demo.first" in _lines(t) and _row(t, "running", "1"),
            what="the first task done and the held one running",
        )
        assert "DAG runs: running: 1" in text
        gate.touch()
        wait_for(done.is_set, timeout=60, what="the scheduler to finish the run")
        text = browser.wait_for_text(
            lambda t: "DAG runs: success: 1" in t and _row(t, "success", "3"),
            what="the finished run",
        )
        assert not _row(text, "running", "1")
        assert "browser_demo.last" in _lines(text)
    finally:
        done.set()
        thread.join(60)
        store.dispose()
    assert run_state() == "success"
