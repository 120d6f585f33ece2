"""The airdask page on real Dask dashboards, the internals it relies on (pinned), the
summary's trip to the Dask scheduler, and the names the task stream shows for our keys.

The browser half (the page rendered and refreshed in Chromium) is test_dashboard_browser.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, LocalCluster, get_task_stream
from distributed.diagnostics.task_stream import rectangles
from distributed.utils import key_split

from airdask.commands import dask_key
from airdask.dashboard import preload
from airdask.dashboard.summary import (
    SummaryPublisher,
    dask_client_of,
    publish_summary,
    read_summary,
)
from airdask.state import TaskInstanceKey
from airdask.store import Store, init_db
from dask_support import dashboard_root, preloaded_dashboard_client
from proc_support import wait_for

BIN = Path(sys.executable).parent


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with preloaded_dashboard_client(threads_per_worker=2) as c:
        yield c


def test_preload_adds_the_page_the_nav_link_and_the_individual_plot(client: Client) -> None:
    root = dashboard_root(client)
    status, page = http_get(f"{root}{preload.ROUTE}")
    # A Bokeh server document (its content is checked in a browser) in Dask's own template.
    assert status == 200 and "data-root-id=" in page and "embed_items" in page
    assert 'href="status"' in page
    status, bare = http_get(f"{root}{preload.INDIVIDUAL_ROUTE}")
    assert status == 200 and "Dask: airdask" in bare and 'href="status"' not in bare
    # Every dashboard page links to ours, in the bar and in "More...".
    _, status_page = http_get(f"{root}/status")
    assert '<a href="airdask">Airdask</a>' in status_page
    assert '<a href="individual-airdask">Airdask</a>' in status_page
    # JupyterLab's dask extension lists the panes from individual-plots.json.
    _, plots = http_get(f"{root}/individual-plots.json")
    assert preload.INDIVIDUAL_ROUTE in json.loads(plots).values()
    assert client.run_on_scheduler(preload.serves_page) is True
    assert client.run_on_scheduler(preload.install) == "already"


def test_pinned_internals_the_preload_relies_on() -> None:
    """If distributed changes these, the page silently disappears: fail loudly instead."""
    import distributed.dashboard.scheduler as dashboard
    from distributed.http.routing import RoutingApplication

    assert isinstance(dashboard.applications, dict)
    assert dashboard.applications[preload.ROUTE] is not None  # registered by the import
    assert callable(dashboard.template_variables)
    assert hasattr(RoutingApplication, "add_application")
    # That the preload is imported before the dashboard is built is pinned by install()
    # answering "already" on preloaded schedulers in the other tests.


def test_published_summary_is_read_on_the_dask_scheduler(client: Client) -> None:
    summary = {"version": 1, "generated_at": "2026-11-23T21:00:00+00:00", "seq": 7, "pools": []}
    summary |= {"states": {"success": 2}, "runs": {}, "events": []}
    publish_summary(client, summary)
    got = client.run_on_scheduler(read_summary)
    # msgpack hands lists over as tuples; the content is the same.
    assert json.loads(json.dumps(got)) == summary


def test_publisher_sends_real_summaries_and_survives_a_closed_client(
    client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path}/airdask.db")
    init_db(store, default_pool_slots=8)
    now = [0.0]
    publisher = SummaryPublisher(interval=2.0, clock=lambda: now[0])
    assert publisher.maybe_publish(store.session, None) is False  # no cluster, nothing to do
    assert publisher.maybe_publish(store.session, client) is True
    assert publisher.maybe_publish(store.session, client) is False  # not due yet
    got = client.run_on_scheduler(read_summary)
    assert got["seq"] == 1 and got["pools"][0]["slots"] == 8

    closed = Client(client.scheduler.address)
    closed.close()
    with caplog.at_level(logging.WARNING, logger="airdask.dashboard.summary"):
        for _ in range(3):
            now[0] += 5
            assert publisher.maybe_publish(store.session, closed) is False
    said = [r for r in caplog.records if "cannot publish" in r.getMessage()]
    assert len(said) == 1 and "client is closed" in said[0].getMessage()
    assert not said[0].exc_info  # an outage is a line, not a stack
    now[0] += 5
    assert publisher.maybe_publish(store.session, client) is True
    assert client.run_on_scheduler(read_summary)["seq"] == 2
    store.dispose()


def test_dask_client_of_finds_the_executors_client(client: Client, tmp_path: Path) -> None:
    from airdask.config import load_config
    from airdask.executors import load_executor

    config = load_config({"AIRDASK_HOME": str(tmp_path)})
    dask = load_executor("DaskExecutor", config=config, client=client)
    assert dask_client_of(dask) is None  # not started
    dask.start()
    try:
        assert dask_client_of(dask) is client
    finally:
        dask.end()
    both = load_executor("LocalDaskExecutor", config=config, client=client)
    both.start()
    try:
        assert dask_client_of(both) is client
    finally:
        both.end()
    assert dask_client_of(load_executor("SequentialExecutor", config=config)) is None


def _start_dask_scheduler(folder: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    sched_file = folder / "scheduler.json"
    proc = subprocess.Popen(
        [
            *(str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0"),
            *("--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file)),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "warning"},
    )
    wait_for(sched_file.exists, timeout=60, what="the dask scheduler's scheduler file")
    return proc, sched_file


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


@pytest.mark.timeout(180)
def test_dask_scheduler_cli_preload_and_install_at_runtime(tmp_path: Path) -> None:
    # `dask scheduler --preload airdask.dashboard.preload`: built in with the dashboard.
    (tmp_path / "a").mkdir()
    proc, sched_file = _start_dask_scheduler(tmp_path / "a", "--preload", preload.PRELOAD)
    try:
        with Client(scheduler_file=str(sched_file)) as c:
            assert http_get(dashboard_root(c) + preload.ROUTE)[0] == 200
            assert c.run_on_scheduler(preload.install) == "already"
    finally:
        _stop(proc)

    # A scheduler started without it gets the page at runtime (Tornado routes).
    (tmp_path / "b").mkdir()
    proc, sched_file = _start_dask_scheduler(tmp_path / "b")
    try:
        with Client(scheduler_file=str(sched_file)) as c:
            root = dashboard_root(c)
            assert http_get(root + preload.ROUTE)[0] == 404
            assert c.run_on_scheduler(preload.install) == "runtime"
            status, page = http_get(root + preload.ROUTE)
            assert status == 200 and "data-root-id=" in page
            assert http_get(root + preload.INDIVIDUAL_ROUTE)[0] == 200
            assert '<a href="airdask">Airdask</a>' in http_get(root + "/status")[1]
            assert c.run_on_scheduler(preload.install) == "already"
    finally:
        _stop(proc)


def test_install_without_a_dashboard_says_so() -> None:
    with (
        LocalCluster(
            n_workers=0,
            processes=True,
            dashboard_address="127.0.0.1:0",
            # The HTTP server still starts (on a random port); no Bokeh dashboard in it.
            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster) as c,
    ):
        assert c.run_on_scheduler(preload.install) == "no-dashboard"


def _work(x: int) -> int:
    return x + 1


def test_task_stream_and_progress_name_tasks_dag_dot_task(client: Client) -> None:
    keys = {
        TaskInstanceKey("etl", "load", "manual__2026-11-23T21:00:00+00:00", 1): "etl.load",
        TaskInstanceKey("etl", "load", "manual__2026-11-23T21:00:00+00:00", 2): "etl.load",
        TaskInstanceKey("etl-2024", "clean-up", "r1", 1, 5): "etl_2024.clean_up",
        TaskInstanceKey("a1b2c3d4", "deadbeef", "run-with-dashes", 3): "a1b2c3d4.deadbeef",
        TaskInstanceKey("nightly", "step_7", "scheduled__1", 1): "nightly.step",
        TaskInstanceKey("nightly", "step_8", "scheduled__1", 1): "nightly.step",
    }
    for key, name in keys.items():
        assert key_split(dask_key(key)) == name
    with get_task_stream(client) as stream:
        futures = [
            client.submit(_work, i, key=dask_key(key), pure=False) for i, key in enumerate(keys)
        ]
        assert client.gather(futures) == [1, 2, 3, 4, 5, 6]
    expected = set(keys.values())
    # The task stream draws one rectangle per task, named key_split(key).
    drawn: dict[str, Any] = rectangles(stream.data)
    assert set(drawn["name"]) == expected
    # The progress and group panes read the scheduler's task prefixes and groups.
    prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert expected <= set(prefixes)
    del futures


def test_the_scheduler_loop_publishes_its_summary(client: Client, config: Any) -> None:
    """No hand-driven publisher: a DAG run through the scheduler leaves its final state on
    the Dask scheduler, where the airdask page reads it."""
    from airdask.api import run_dag
    from airdask.dag import DAG, BashTask
    from airdask.executors.dask import DaskExecutor

    with DAG("published") as dag:
        BashTask("a", "true") >> BashTask("b", "true")
    result = run_dag(dag, executor=DaskExecutor(client=client, config=config), timeout=120)
    assert result.state == "success"
    summary = client.run_on_scheduler(read_summary)
    assert summary is not None
    assert summary["runs"] == {"success": 1}
    assert summary["states"] == {"success": 2}
    assert {e["task_id"] for e in summary["events"] if e["dag_id"] == "published"} >= {"a", "b"}
