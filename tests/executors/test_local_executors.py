"""What the local executors do beyond the shared contract."""

from __future__ import annotations

import os
import signal
import sys
import warnings
from pathlib import Path

import pytest

from airdask.config import Config
from airdask.executors import (
    BUILTIN_EXECUTORS,
    BaseExecutor,
    ExecutorLoadError,
    NotSupportedError,
    load_executor,
)
from airdask.executors.base import RunningRetryAttemptType
from airdask.executors.debug import DebugExecutor
from airdask.executors.local import LocalExecutor
from airdask.executors.sequential import SequentialExecutor
from airdask.state import TaskInstanceState
from executor_support import drain, make_ti
from proc_support import pid_alive, pids_file_complete, read_pids, spawn_tree_script, wait_for

S = TaskInstanceState
PLUGINS = str(Path(__file__).resolve().parents[1] / "plugins")


def test_local_worker_death_fails_exactly_its_task(config: Config, tmp_path: Path) -> None:
    ex = LocalExecutor(2, config=config)
    ex.start()
    victim_pids, other = tmp_path / "victim", make_ti("other")
    victim = make_ti("victim")
    # $PPID of the bash leader is the worker process that hosts the command.
    ex.queue_command(victim, ["bash", "-c", f"echo $PPID >> {victim_pids}; " +
                              " ".join(spawn_tree_script(victim_pids)[2:])])  # fmt: skip
    ex.queue_command(other, ["true"])
    ex.heartbeat()
    wait_for(pids_file_complete(victim_pids, 3), timeout=60, what="victim start")
    worker_pid, *command_pids = read_pids(victim_pids)
    os.kill(worker_pid, signal.SIGKILL)
    events = drain(ex, [victim.key, other.key])
    state, info = events[victim.key]
    assert state is S.FAILED and info.kind == "worker_died"
    assert f"pid {worker_pid}) died: killed by SIGKILL" in str(info)
    assert events[other.key][0] is S.SUCCESS
    wait_for(lambda: not any(map(pid_alive, command_pids)), timeout=15, what="orphans reaped")
    # The pool replaces the dead worker and goes on.
    again = make_ti("again")
    ex.queue_command(again, ["true"])
    assert drain(ex, [again.key])[again.key][0] is S.SUCCESS
    ex.end()


def test_a_local_worker_whose_scheduler_died_as_it_started_runs_nothing(tmp_path: Path) -> None:
    """A scheduler SIGKILLed while its new worker's interpreter starts sends it no death
    signal; the attempt it already sent must not run (it would end beside its retry)."""
    import socket
    import subprocess
    from multiprocessing.connection import Connection

    from airdask.commands import build_spec
    from airdask.state import TaskInstanceKey

    marker = tmp_path / "ran"
    spec = build_spec(TaskInstanceKey("d", "t", "r", 1), ["touch", str(marker)],
                      log_root=str(tmp_path), return_log=False)  # fmt: skip
    ours, theirs = socket.socketpair()
    with theirs:
        gone = os.getpid() + 1  # the scheduler that spawned it; this test is its parent now
        worker = subprocess.Popen(
            [sys.executable, "-m", "airdask.executors.local_worker", str(theirs.fileno()),
             "1", str(gone)],
            pass_fds=[theirs.fileno()],
        )  # fmt: skip
    conn = Connection(ours.detach())
    try:
        conn.send(spec)
        assert worker.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        worker.kill()
        conn.close()
    assert not marker.exists()


def test_parallelism_zero_uses_a_process_per_task(config: Config, tmp_path: Path) -> None:
    ex = LocalExecutor(0, config=config)
    ex.start()
    tis = [make_ti(f"t{i}") for i in range(3)]
    out = tmp_path / "ppids"
    for ti in tis:
        ex.queue_command(ti, ["bash", "-c", f"echo $PPID >> {out}; sleep 0.3"])
    assert ex.slots_available == sys.maxsize
    drain(ex, [ti.key for ti in tis])
    assert len(set(read_pids(out))) == 3
    ex.end()


def test_revoke_kills_a_running_task_and_reports_nothing(config: Config, tmp_path: Path) -> None:
    ex = LocalExecutor(2, config=config)
    ex.start()
    pids = tmp_path / "pids"
    ti = make_ti("long")
    ex.queue_command(ti, spawn_tree_script(pids))
    ex.heartbeat()
    state, info = ex.get_event_buffer()[ti.key]  # a local executor reports its own start
    assert state is S.RUNNING and info.kind == "running" and info.hostname
    wait_for(pids_file_complete(pids, 2), timeout=60, what="start")
    ex.revoke_task(ti=ti)
    assert not ex.has_task(ti)
    wait_for(lambda: not any(map(pid_alive, read_pids(pids))), timeout=15, what="group death")
    ex.heartbeat()
    assert ti.key not in ex.get_event_buffer()
    ex.end()


def test_cleanup_stuck_queued_tasks_withdraws_them(config: Config) -> None:
    ex = SequentialExecutor(config=config)
    stuck = [make_ti("a"), make_ti("b")]
    for ti in stuck:
        ex.queue_command(ti, ["true"])
    lines = ex.cleanup_stuck_queued_tasks(stuck)
    assert len(lines) == 2 and "stuck in queued" in lines[0]
    assert not any(ex.has_task(ti) for ti in stuck)
    ex.heartbeat()
    assert ex.get_event_buffer() == {}


def test_debug_executor_is_deprecated_and_fail_fast(config: Config) -> None:
    with pytest.warns(DeprecationWarning, match="use SequentialExecutor"):
        ex = DebugExecutor(config=config, fail_fast=True)
    first, second = make_ti("first"), make_ti("second")
    ex.queue_command(first, ["false"], priority=2)
    ex.queue_command(second, ["true"], priority=1)
    ex.end()
    events = ex.get_event_buffer()
    assert events[first.key][0] is S.FAILED
    assert events[second.key][0] is S.FAILED and "fail_fast" in str(events[second.key][1])


def test_load_executor_by_name_and_from_config(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(load_executor("SequentialExecutor", config=config), SequentialExecutor)
    monkeypatch.setenv("AIRDASK__CORE__EXECUTOR", "LocalExecutor")
    from airdask.config import load_config

    ex = load_executor(config=load_config())
    assert isinstance(ex, LocalExecutor) and ex.parallelism == 32


def test_unknown_executor_lists_the_builtins(config: Config) -> None:
    with pytest.raises(ExecutorLoadError) as err:
        load_executor("NoSuchExecutor", config=config)
    for name in BUILTIN_EXECUTORS:
        assert name in str(err.value)
    with pytest.raises(ExecutorLoadError, match="cannot import executor module 'nope'"):
        load_executor("nope.Thing", config=config)
    with pytest.raises(ExecutorLoadError, match="is not a BaseExecutor subclass"):
        load_executor("airdask.config.Config", config=config)


def test_custom_executor_from_config_path(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(PLUGINS)
    (home / "airdask.cfg").write_text("[core]\nexecutor = my_executor.InlineExecutor\n")
    from airdask.config import load_config

    ex = load_executor(config=load_config())
    assert type(ex).__name__ == "InlineExecutor" and isinstance(ex, BaseExecutor)
    ok, bad = make_ti("ok"), make_ti("bad")
    ex.queue_command(ok, ["true"])
    ex.queue_command(bad, ["false"])
    events = drain(ex, [ok.key, bad.key])
    assert events[ok.key][0] is S.SUCCESS and events[bad.key][0] is S.FAILED
    assert str(events[bad.key][1]) == "exit code 1"


def test_base_class_says_what_is_not_supported(config: Config) -> None:
    class Minimal(BaseExecutor):
        pass

    ex = Minimal(config=config)
    ti = make_ti("t")
    with pytest.raises(NotImplementedError, match="must implement sync"):
        ex.sync()
    for call in (ex.end, ex.terminate, lambda: ex.revoke_task(ti=ti)):
        with pytest.raises(NotSupportedError, match="Minimal"):
            call()
    assert ex.try_adopt_task_instances([ti]) == [ti]
    assert ex.get_cli_commands() == [] and ex.get_task_log(ti, 1) == ([], [])
    # execute_async raising inside heartbeat becomes a FAILED event, not an exception
    ex.queue_command(ti, ["true"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            ex.heartbeat()
        except NotImplementedError as exc:
            assert "sync" in str(exc)
    state, info = ex.get_event_buffer()[ti.key]
    assert state is S.FAILED and "must implement execute_async" in str(info)


def test_negative_parallelism_is_refused(config: Config) -> None:
    with pytest.raises(ValueError, match="parallelism must be >= 0"):
        LocalExecutor(-1, config=config)


def test_a_key_queued_while_running_gets_one_check_past_min_seconds() -> None:
    """As Airflow 2.10's RunningRetryAttemptType: re-checked while MIN_SECONDS have not
    passed, then once more, then given up."""
    waiting = RunningRetryAttemptType()
    waiting.MIN_SECONDS = 3600.0
    assert all(waiting.can_try_again() for _ in range(20)) and waiting.total_tries == 20
    late = RunningRetryAttemptType()
    late.MIN_SECONDS = -1.0  # every check is past it
    assert late.can_try_again() is True
    assert late.can_try_again() is False and late.can_try_again() is False
    assert late.total_tries == 1
