"""How airdask's attempts reach Dask's workers (ADR 0015), on real clusters: each goes to a
worker when it arrives instead of waiting in Dask's queue of root-ish tasks, and a worker's
death counts against the attempt it was running, not against those waiting behind it."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, Event

from airdask import PythonCommand
from airdask.commands import dask_key
from airdask.config import Config
from airdask.executors.dask import DaskExecutor
from airdask.executors.dask.keeper import KEEPER_NAME
from airdask.state import TaskInstanceState
from dask_support import local_cluster
from executor_support import drain, make_ti
from proc_support import wait_for
from task_funcs import append_line, wait_for_event

S = TaskInstanceState
#: More attempts of one task than twice the cluster's threads: Dask takes them for root-ish.
MAPPED = 12


def _states(client: Client, keys: list[str]) -> dict[str, str | None]:
    def states(dask_scheduler: Any, keys: list[str] = keys) -> dict[str, str | None]:
        found = {k: dask_scheduler.tasks.get(k) for k in keys}
        return {k: None if ts is None else str(ts.state) for k, ts in found.items()}

    return client.run_on_scheduler(states)  # type: ignore[no-any-return]


def _keeper(client: Client, what: str) -> Any:
    def read(dask_scheduler: Any, what: str = what) -> Any:
        found = getattr(dask_scheduler.plugins[KEEPER_NAME], what)
        return sorted(found) if isinstance(found, set) else found

    return client.run_on_scheduler(read)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("dispatch", ["assign", "queue"])
def test_mapped_attempts_go_to_the_workers_unless_told_to_queue_as_raw_tasks_do(
    config: Config, dispatch: str
) -> None:
    with local_cluster(n_workers=1, threads=2) as cluster, Client(cluster) as client:
        gate = Event("dispatch-gate", client=client)
        told = config.with_overrides({("dask", "dispatch"): dispatch})
        ex = DaskExecutor(client=client, config=told)
        tis = [make_ti("fan", dag_id="dispatch", map_index=i) for i in range(MAPPED)]
        for ti in tis:
            ex.queue_command(ti, PythonCommand(wait_for_event, "dispatch-gate"))
        ex.heartbeat()
        names = [dask_key(ti.key) for ti in tis]
        raw = client.map(wait_for_event, ["dispatch-gate"] * MAPPED, pure=False)
        try:
            every = [*names, *(f.key for f in raw)]
            wait_for(lambda: None not in _states(client, every).values(), timeout=30,
                     what="every task on the scheduler")  # fmt: skip
            ours = set(_states(client, names).values())
            theirs = set(_states(client, [f.key for f in raw]).values())
            # The same shape of graph from a plain client waits in Dask's queue (which is
            # what makes this test able to fail).
            assert "queued" in theirs, theirs
            assert ours == {"processing"} if dispatch == "assign" else "queued" in ours, ours
        finally:
            gate.set()
        events = drain(ex, [ti.key for ti in tis], timeout=60)
        assert {state for state, _ in events.values()} == {S.SUCCESS}
        client.gather(raw, errors="skip")
        ex.end()


def _run_then_wait(ledger: str, gate: str) -> None:
    append_line(ledger, "run")
    wait_for_event(gate)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_worker_s_death_counts_against_its_running_attempt_not_the_waiting_ones(
    config: Config, tmp_path: Path
) -> None:
    """One worker with one thread: ``running`` runs, the ``waiting`` attempts are assigned
    to the worker behind it. The worker is SIGKILLed twice (its nanny starts it again).
    With ``allowed_failures = 1``, the second death fails ``running`` with KilledWorker, as
    Dask would; the waiting attempts, which never began, survive both and then succeed."""
    ledger = tmp_path / "runs"
    with (
        local_cluster(n_workers=1, threads=1, allowed_failures=1) as cluster,
        Client(cluster) as client,
    ):
        ex = DaskExecutor(client=client, config=config)
        running = make_ti("running", dag_id="deaths", priority_weight=10)
        waiting = [make_ti("waiting", dag_id="deaths", map_index=i) for i in range(3)]
        ex.queue_command(running, PythonCommand(_run_then_wait, str(ledger), "deaths-gate"))
        for ti in waiting:
            ex.queue_command(ti, PythonCommand(wait_for_event, "deaths-gate"))
        ex.heartbeat()
        name = dask_key(running.key)
        for death in (1, 2):
            wait_for(lambda d=death: ledger.exists() and ledger.read_text().count("run") == d,
                     timeout=60, what=f"run {death} of the running attempt")  # fmt: skip
            # Synchronise on the keeper, not on time: it knows the attempt began.
            wait_for(lambda: name in _keeper(client, "executing"), timeout=30,
                     what="the keeper to learn that the attempt began")  # fmt: skip
            worker_pid = next(iter(client.run(os.getpid).values()))
            os.kill(worker_pid, signal.SIGKILL)
            if death == 1:
                client.wait_for_workers(1, timeout=60)
        state, info = drain(ex, [running.key], timeout=90)[running.key]
        assert state is S.FAILED and info.kind == "worker_died", info
        assert _keeper(client, "deaths_taken_back") == 2 * len(waiting)
        client.wait_for_workers(1, timeout=60)
        Event("deaths-gate", client=client).set()
        events = drain(ex, [ti.key for ti in waiting], timeout=90)
        assert {state for state, _ in events.values()} == {S.SUCCESS}, events
        ex.end()
