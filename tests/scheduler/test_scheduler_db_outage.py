"""The metadata database goes away mid-run (a private PostgreSQL server, stopped or
restarted): the scheduler waits it out, keeps what the executor reported, and finishes."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airdask.config import Config, load_config
from airdask.dag import DAG, BashTask
from airdask.executors.base import EventBufferValueType
from airdask.executors.sequential import SequentialExecutor
from airdask.scheduler.loop import SchedulerJob
from airdask.state import TaskInstanceKey
from airdask.store import Store, TaskInstance, init_db
from ha_support import FAST_RECOVERY, write_dag
from pg_support import PrivatePostgres, private_postgres
from proc_support import wait_for
from sched_support import AIRDASK, cli, cli_env, run_in_thread, run_state, tis_of
from task_funcs import read_ledger

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def server() -> Iterator[PrivatePostgres]:
    with private_postgres() as pg:
        yield pg


def ends(ledger: Path) -> Counter[str]:
    return Counter(name for kind, name, _ in read_ledger(str(ledger)) if kind == "end")


@pytest.mark.timeout(240)
def test_a_postgresql_restart_mid_run_does_not_stop_the_scheduler(
    tmp_path: Path, server: PrivatePostgres
) -> None:
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    ledger = tmp_path / "ledger"
    width = 60
    write_dag(home / "dags", "blip", ledger, width)
    env = {
        **FAST_RECOVERY,
        "AIRDASK__DATABASE__SQL_ALCHEMY_CONN": server.url,
        "AIRDASK__CORE__EXECUTOR": "LocalExecutor",
        "AIRDASK__CORE__PARALLELISM": "4",
    }
    assert cli("db", "init", home=home, env=env).returncode == 0
    assert cli("dags", "trigger", "blip", "--run-id", "r1", home=home, env=env).returncode == 0
    log = tmp_path / "scheduler.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*AIRDASK, "scheduler"], env=cli_env(home, env), stdout=out, stderr=out
        )
    store = Store.from_url(server.url)
    try:
        wait_for(lambda: sum(ends(ledger).values()) >= 10, timeout=90, what="ten tasks to end")
        server.restart()  # connections cut, refused for a moment, then back
        before = sum(ends(ledger).values())
        wait_for(
            lambda: proc.poll() is not None or sum(ends(ledger).values()) >= before + 5,
            timeout=60,
            what="tasks to go on ending after the restart",
        )
        assert proc.poll() is None, log.read_text()[-3000:]
        wait_for(
            lambda: proc.poll() is not None or run_state(store, "blip", "r1") == "success",
            timeout=120,
            what="the run to succeed",
        )
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "database unavailable" in text and "database reachable again" in text, text
    tis = tis_of(store, "blip", "r1")
    assert {ti.state for ti in tis.values()} == {"success"}
    assert all(ti.try_number == 1 for ti in tis.values())  # nothing lost, nothing rerun
    assert ends(ledger) == Counter(dict.fromkeys(tis, 1))
    store.dispose()


class OutageExecutor(SequentialExecutor):
    """A SequentialExecutor that stops the database the first time it hands over an
    outcome, and checks the heartbeat contract: at each heartbeat, every outcome it handed
    over before is recorded in the database."""

    def __init__(self, server: PrivatePostgres, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server = server
        self.store = Store.from_url(server.url)
        self.handed: dict[TaskInstanceKey, str] = {}
        self.heartbeats = 0
        self.outage = threading.Event()
        self.violations: list[str] = []

    def heartbeat(self) -> None:
        self.heartbeats += 1
        if self.handed:
            try:
                self._check_recorded()
            except Exception as exc:  # the database is out: a heartbeat too soon
                self.violations.append(f"heartbeat during the outage ({type(exc).__name__})")
        super().heartbeat()

    def _check_recorded(self) -> None:
        with self.store.session() as session:
            for key, state in self.handed.items():
                ti = session.get(TaskInstance, key.primary)
                if ti is None or ti.try_number != key.try_number or ti.state != state:
                    self.violations.append(f"heartbeat before {key} {state} was recorded")

    def get_event_buffer(self, dag_ids: Any = None) -> dict[TaskInstanceKey, EventBufferValueType]:
        events = super().get_event_buffer(dag_ids)
        for key, (state, _) in events.items():
            if state is not None and state.value in ("success", "failed"):
                self.handed[key] = state.value
        if self.handed and not self.outage.is_set():
            self.server.stop()  # the scheduler now holds outcomes it cannot write
            self.outage.set()
        return events


@pytest.mark.timeout(120)
def test_outcomes_taken_during_an_outage_are_kept_and_no_heartbeat_comes_first(
    home: Path, server: PrivatePostgres, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setenv("AIRDASK__DATABASE__SQL_ALCHEMY_CONN", server.url)
    config: Config = load_config()
    store = Store.from_config(config)
    init_db(store)
    with DAG("held") as dag:
        BashTask("a", "echo a") >> BashTask("b", "echo b") >> BashTask("c", "echo c")
    executor = OutageExecutor(server, config=config)
    job = SchedulerJob(store=store, executor=executor, config=config, dags={"held": dag})
    caplog.set_level(logging.WARNING, logger="airdask.scheduler.loop")
    run_id, side = run_in_thread(job, dag)
    try:
        assert executor.outage.wait(60), "no outcome was ever handed over"
        at_outage = executor.heartbeats

        def retries() -> int:
            return sum("database still unavailable" in r.getMessage() for r in caplog.records)

        wait_for(lambda: not side.is_alive() or retries() >= 3, timeout=60, what="three retries")
        assert side.is_alive(), "the scheduler stopped on the outage"
        assert executor.heartbeats == at_outage, "heartbeat while outcomes were not recorded"
        server.start()
        side.join(60)
        assert not side.is_alive(), "the run did not finish after the database came back"
    finally:
        if not server.ready():
            server.start()
        job.request_stop()
        side.join(30)
    assert executor.violations == []
    tis = tis_of(store, "held", run_id)
    assert {t: (ti.state, ti.try_number) for t, ti in tis.items()} == {
        "a": ("success", 1),
        "b": ("success", 1),
        "c": ("success", 1),
    }
    store.dispose()
    executor.store.dispose()
