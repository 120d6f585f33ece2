"""Fault injection on real Dask clusters. Each test asserts that nothing is lost (every
attempt gets a terminal event with its reason) and that no attempt succeeds twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import dask
import pytest
from distributed import Client

from airdask import PythonCommand
from airdask.commands import dask_key
from airdask.config import Config
from airdask.executors.dask import DaskExecutor
from airdask.executors.dask import executor as executor_module
from airdask.executors.dask.adoption import KeeperError, lookup
from airdask.state import TaskInstanceState
from dask_support import external_cluster, local_cluster
from executor_support import drain, make_ti
from proc_support import pid_alive, pids_file_complete, read_pids, wait_for
from task_funcs import read_ledger

S = TaskInstanceState
pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parents[2]  # tests/, where the helpers are


def _worker_pid() -> int:
    return os.getpid()


def _kill_own_worker() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _scheduler_state(client: Any, name: str) -> str | None:
    def state(dask_scheduler: Any, name: str = name) -> str | None:
        ts = dask_scheduler.tasks.get(name)
        return None if ts is None else str(ts.state)

    return client.run_on_scheduler(state)  # type: ignore[no-any-return]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("allowed_failures", [0, 1])
def test_worker_sigkilled_mid_task_leaves_no_orphan(
    config: Config, tmp_path: Path, allowed_failures: int
) -> None:
    pids, marker, runs = tmp_path / "pids", tmp_path / "marker", tmp_path / "runs"
    script = (
        f"echo run >> {runs}; "
        f"if [ -e {marker} ]; then echo second-run; exit 0; fi; touch {marker}; "
        f"sleep 60 & echo $! >> {pids}; echo $$ >> {pids}; wait"
    )
    with local_cluster(n_workers=2, threads=1, allowed_failures=allowed_failures) as cluster:
        ex = DaskExecutor(cluster.scheduler_address, config=config)
        ex.start()
        ti = make_ti("victim")
        ex.queue_command(ti, ["bash", "-c", script])
        ex.heartbeat()
        wait_for(pids_file_complete(pids, 2), timeout=30, what="the command to start")
        name = dask_key(ti.key)

        def where(dask_scheduler: Any, name: str = name) -> str:
            return str(dask_scheduler.tasks[name].processing_on.address)

        address = ex.client.run_on_scheduler(where)
        worker_pid = ex.client.run(_worker_pid, workers=[address])[address]
        os.kill(worker_pid, signal.SIGKILL)
        # The reaper kills the command's whole process group when its worker dies.
        wait_for(lambda: not any(map(pid_alive, read_pids(pids))), timeout=15, what="no orphan")
        state, info = drain(ex, [ti.key], timeout=60)[ti.key]
        if allowed_failures == 0:
            assert state is S.FAILED and info.kind == "worker_died", info
            assert "KilledWorker" in str(info)
            assert runs.read_text().count("run") == 1
        else:
            # Dask reran it once; the rerun ran to its end exactly once.
            assert state is S.SUCCESS, info
            assert runs.read_text().count("run") == 2
            _, lines = ex.get_task_log(ti, 1)
            assert "second-run" in lines
        ex.end()


@pytest.mark.timeout(120)
def test_poison_task_that_kills_its_worker_is_killed_worker(config: Config) -> None:
    with local_cluster(n_workers=2, threads=1, allowed_failures=1) as cluster:
        ex = DaskExecutor(cluster.scheduler_address, config=config)
        ex.start()
        poison, fine = make_ti("poison"), make_ti("fine")
        ex.queue_command(poison, PythonCommand(_kill_own_worker))
        ex.queue_command(fine, ["true"])
        events = drain(ex, [poison.key, fine.key], timeout=90)
        state, info = events[poison.key]
        assert state is S.FAILED and info.kind == "worker_died"
        assert "KilledWorker" in str(info) and "2 different workers" in str(info)
        assert events[fine.key][0] is S.SUCCESS
        ex.end()


@pytest.mark.timeout(120)
def test_stuck_task_on_a_vanished_resource_is_cleaned_up(config: Config, tmp_path: Path) -> None:
    with external_cluster(tmp_path) as cl:
        gpu_worker = cl.start_worker(resources="gpu=1", nthreads=1, nanny=False)
        cl.start_worker(nthreads=1)
        ex = DaskExecutor(cl.address, config=config, resource_ttl=3600)
        ex.start()
        ex.client.wait_for_workers(2, timeout=60)
        first = make_ti("first", queue="gpu")
        ex.queue_command(first, ["true"], queue="gpu")
        assert drain(ex, [first.key])[first.key][0] is S.SUCCESS
        os.killpg(gpu_worker.pid, signal.SIGKILL)
        gpu_worker.wait(30)
        wait_for(
            lambda: len(ex.client.scheduler_info(n_workers=-1)["workers"]) == 1,
            timeout=30,
            what="the gpu worker to leave",
        )
        stuck = make_ti("stuck", queue="gpu")
        ex.queue_command(stuck, ["true"], queue="gpu")
        ex.heartbeat()
        name = dask_key(stuck.key)
        wait_for(
            lambda: _scheduler_state(ex.client, name) == "no-worker",
            timeout=30,
            what="the task to wait for a worker",
        )
        ex.get_event_buffer()
        lines = ex.cleanup_stuck_queued_tasks([stuck])
        assert lines and str(stuck.key) in lines[0]
        assert not ex.has_task(stuck)
        wait_for(
            lambda: _scheduler_state(ex.client, name) is None,
            timeout=30,
            what="Dask to forget the cancelled task",
        )
        ex.heartbeat()
        assert stuck.key not in ex.get_event_buffer()
        messages, _ = ex.get_task_log(first, 1)  # its worker is gone, its log is not
        assert messages[0].startswith("log file")
        ex.end()


def _started_on(cl: Any, config: Config, *, nthreads: int) -> DaskExecutor:
    """A started DaskExecutor on ``cl`` with one new worker of ``nthreads`` threads."""
    cl.start_worker(nthreads=nthreads)
    ex = DaskExecutor(cl.address, config=config)
    ex.start()
    ex.client.wait_for_workers(1, timeout=60)
    return ex


@pytest.mark.timeout(150)
def test_a_restarted_dask_scheduler_costs_no_try_and_leaves_no_command(
    config: Config, tmp_path: Path
) -> None:
    """Issue 15, point 4. While the Dask scheduler is down nothing is submitted and nothing
    is reported (a lost connection is not a task's end); the workers that lost it kill
    their commands; on the restarted scheduler the executor installs airdask again, reports
    the attempts in flight as outcome unknown, names the new scheduler in external ids, and
    runs what was queued meanwhile."""
    with external_cluster(tmp_path) as cl:
        ex = _started_on(cl, config, nthreads=2)
        old_id = ex.scheduler_id
        pids = [tmp_path / f"pids{i}" for i in range(2)]
        tis = [make_ti(f"t{i}") for i in range(2)]
        for ti, pid_file in zip(tis, pids, strict=True):
            ex.queue_command(ti, ["bash", "-c", f"echo $$ >> {pid_file}; sleep 60"])
        ex.heartbeat()
        for pid_file in pids:
            wait_for(pids_file_complete(pid_file, 1), timeout=30, what="commands to start")
        ex.get_event_buffer()
        cl.kill_scheduler()
        # the worker closes when it loses its scheduler, and kills what it ran
        wait_for(lambda: not any(pid_alive(p) for f in pids for p in read_pids(f)),
                 timeout=30, what="the commands to die with their worker's scheduler")  # fmt: skip
        wait_for(lambda: ex.slots_available == 0 or not ex._connected(), timeout=30,
                 what="the executor to notice")  # fmt: skip
        during = make_ti("during")
        ex.queue_command(during, ["true"])
        ex.heartbeat()
        assert ex.slots_available == 0 and ex.has_task(during)  # held, not failed
        with pytest.raises(KeeperError, match="unreachable"):  # it may still run, for all
            ex.revoke_task(ti=tis[0])  # the executor knows: the scheduler keeps it queued
        assert ex.has_task(tis[0])
        assert {k for k, (s, _) in ex.get_event_buffer().items() if s is not S.QUEUED} == set()
        cl.restart_scheduler()
        cl.start_worker(nthreads=2)  # a dask worker ends with its scheduler: a new one
        events = drain(ex, [*(ti.key for ti in tis), during.key], timeout=90)
        for ti in tis:
            state, info = events[ti.key]
            assert state is S.FAILED and info.kind == "connection_lost" and info.outcome_unknown
            assert "restarted" in str(info)
        assert events[during.key][0] is S.SUCCESS, events[during.key]
        assert ex.scheduler_id != old_id
        assert events[during.key][1].external_executor_id.startswith(f"{ex.scheduler_id}/")
        ex.end()


@pytest.mark.timeout(120)
def test_a_client_whose_own_reconnect_stalls_is_replaced(config: Config, tmp_path: Path) -> None:
    """Dask's client reconnects by itself, but tries again only on ``OSError``: a handshake
    that loses the cancelled-keys race (another client cancelled at that moment; the new
    scheduler's preload makes it happen) ends its reconnect with the client ``connecting``
    for good. Once that client's reconnect window is over, the executor connects anew, and
    what was queued meanwhile runs."""
    preload = ["--preload", str(Path(__file__).with_name("stall_first_client.py"))]
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "3s"}),
        external_cluster(tmp_path) as cl,
    ):
        ex = _started_on(cl, config, nthreads=1)
        stalled = ex.client
        cl.restart_scheduler(extra=preload)
        cl.start_worker(nthreads=1)
        ti = make_ti("after")
        ex.queue_command(ti, ["true"])
        events = drain(ex, [ti.key], timeout=60)
        assert events[ti.key][0] is S.SUCCESS, events[ti.key]
        assert ex.client is not stalled  # replaced: Dask's own reconnect did not get through
        wait_for(lambda: stalled.status in ("closing", "closed"), timeout=30,
                 what="the stalled client to be closed")  # fmt: skip
        ex.end()


@pytest.mark.timeout(150)
def test_a_failed_install_on_a_restarted_dask_scheduler_is_tried_again(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first try to install airdask on the new Dask scheduler fails: the next sync()
    must still take it for a new scheduler (install again, report the attempts that died
    with the old one, name the new one in external ids), not for the old one come back."""
    with external_cluster(tmp_path) as cl:
        ex = _started_on(cl, config, nthreads=1)
        old_id = ex.scheduler_id
        pid_file = tmp_path / "pids"
        ti = make_ti("in_flight")
        ex.queue_command(ti, ["bash", "-c", f"echo $$ >> {pid_file}; sleep 60"])
        ex.heartbeat()
        wait_for(pids_file_complete(pid_file, 1), timeout=30, what="the command to start")
        ex.get_event_buffer()
        cl.kill_scheduler()
        wait_for(lambda: not ex._connected(), timeout=30, what="the executor to notice")
        ex.heartbeat()  # DOWN
        install = ex._install_runner
        failures: list[str] = []

        def failing_once() -> None:
            if not failures:
                failures.append("install")
                raise OSError("the new scheduler did not answer in time")
            install()

        monkeypatch.setattr(ex, "_install_runner", failing_once)
        cl.restart_scheduler()
        cl.start_worker(nthreads=1)
        events = drain(ex, [ti.key], timeout=60)
        assert failures == ["install"]
        state, info = events[ti.key]
        assert state is S.FAILED and info.kind == "connection_lost" and "restarted" in str(info)
        assert ex.scheduler_id != old_id
        assert ex.client.sync(ex.client.scheduler.airdask_keeper_info) is not None
        ex.end()


@pytest.mark.timeout(120)
def test_a_failed_lookup_after_a_reconnect_is_asked_again(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Back on the same Dask scheduler, the executor asks the keeper about its attempts (an
    outcome pushed while the link was down never reached it). When that lookup fails, the
    next sync() must ask again: nothing else would, and a missed outcome would leave its
    task instance running for ever."""
    with local_cluster(n_workers=1, threads=1) as cluster:
        ex = DaskExecutor(cluster.scheduler_address, config=config)
        ex.start()
        ti = make_ti("held_over_a_blip")
        ex.queue_command(ti, ["bash", "-c", f"touch {tmp_path / 'started'}; sleep 60"])
        ex.heartbeat()
        wait_for((tmp_path / "started").exists, timeout=30, what="the command to start")
        asked: list[list[str]] = []

        def failing_once(client: Any, names: list[str]) -> dict[str, Any]:
            asked.append(list(names))
            if len(asked) == 1:
                raise KeeperError("the Dask scheduler did not answer")
            return lookup(client, names)

        monkeypatch.setattr(executor_module, "lookup", failing_once)
        comm = ex.client.scheduler_comm
        ex.client.loop.add_callback(comm.comm.abort)  # the link drops; the client reconnects
        wait_for(lambda: ex.client.scheduler_comm is not comm and ex._connected(), timeout=30,
                 what="the client to reconnect")  # fmt: skip

        def asked_twice() -> bool:
            ex.heartbeat()
            return len(asked) >= 2

        wait_for(asked_twice, timeout=30, what="the keeper to be asked again")
        assert asked[1] == [dask_key(ti.key)]
        ex.terminate()


ADOPT_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    import cloudpickle, task_funcs
    cloudpickle.register_pickle_by_value(task_funcs)
    from airdask import PythonCommand
    from airdask.config import load_config
    from airdask.executors.dask import DaskExecutor
    from executor_support import make_ti

    address, ledger, out, n = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    ex = DaskExecutor(address, config=load_config(), queued_report_seconds=0)
    ex.start()
    ids = {}
    for i in range(n):
        ti = make_ti(f"t{i}", dag_id="adopt")
        seconds = 0.0 if i == 0 else 3.0
        ex.queue_command(ti, PythonCommand(task_funcs.ledger_task, ledger, f"t{i}", seconds))
    while len(ids) < n:
        ex.heartbeat()
        for key, (state, info) in ex.get_event_buffer().items():
            if state.value == "queued":
                ids[key.task_id] = info.external_executor_id
        time.sleep(0.01)
    with open(out + ".tmp", "w") as fh:
        json.dump(ids, fh)
    import os
    os.replace(out + ".tmp", out)
    time.sleep(600)  # SIGKILLed by the test with its tasks in flight
    """
)


@pytest.mark.timeout(150)
def test_new_executor_adopts_tasks_of_a_killed_one(
    home: Path, config: Config, tmp_path: Path
) -> None:
    ledger, out, n = tmp_path / "ledger", tmp_path / "ids.json", 4
    with external_cluster(tmp_path) as cl:
        cl.start_worker(nthreads=4)
        proc = subprocess.Popen(
            [sys.executable, "-c", ADOPT_SCRIPT, str(TESTS), cl.address, str(ledger), str(out),
             str(n)],
            env={**os.environ, "PYTHONPATH": str(TESTS)},
        )  # fmt: skip
        try:
            wait_for(out.exists, timeout=60, what="the first executor to submit")
            # t0 has finished (it sleeps 0s), the others are running
            wait_for(
                lambda: (
                    [r[1] for r in read_ledger(str(ledger)) if r[0] == "end"] == ["t0"]
                    and len([r for r in read_ledger(str(ledger)) if r[0] == "start"]) == n
                ),
                timeout=30,
                what="t0 done and the others started",
            )
        finally:
            proc.kill()
            proc.wait(10)
        ids = json.loads(out.read_text())
        ex = DaskExecutor(cl.address, config=config)
        ex.start()
        tis = []
        for i in range(n):
            ti = make_ti(f"t{i}", dag_id="adopt")
            ti.external_executor_id = ids[f"t{i}"]
            tis.append(ti)
        foreign = make_ti("foreign", dag_id="adopt")
        foreign.external_executor_id = f"Scheduler-gone/{dask_key(foreign.key)}"
        unknown = make_ti("never_submitted", dag_id="adopt")
        unknown.external_executor_id = f"{ex.scheduler_id}/{dask_key(unknown.key)}"
        left = ex.try_adopt_task_instances([*tis, foreign, unknown])
        assert {ti.task_id for ti in left} == {"foreign", "never_submitted"}
        # t0 finished before its executor died: reported at once from the keeper's copy
        assert not ex.has_task(tis[0]) and all(ex.has_task(ti) for ti in tis[1:])
        events = {**ex.get_event_buffer(), **drain(ex, [ti.key for ti in tis[1:]], timeout=60)}
        assert all(events[ti.key][0] is S.SUCCESS for ti in tis), events
        starts = sorted(name for kind, name, _ in read_ledger(str(ledger)) if kind == "start")
        assert starts == [f"t{i}" for i in range(n)]  # each ran exactly once
        ex.end()
        with Client(cl.address, set_as_default=False) as client:  # nothing left behind
            assert client.sync(client.scheduler.airdask_keeper_info) == {"live": 0, "kept": 0}
