from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from airdask import PythonCommand, runner
from airdask.commands import ArgvWithFiles, CommandError, build_spec, check_command, dask_key
from airdask.state import TaskInstanceKey
from proc_support import pid_alive, pids_file_complete, read_pids, spawn_tree_script, wait_for

KEY = TaskInstanceKey("dag", "task", "run1", 1)


def spec_for(command: object, tmp_path: Path, **kw: object) -> runner.TaskSpec:
    options: dict[str, object] = {"log_root": str(tmp_path), "return_log": True}
    options.update(kw)
    return build_spec(KEY, command, **options)  # type: ignore[arg-type]


def test_argv_success_and_log(tmp_path: Path) -> None:
    out = runner.run_task(spec_for(["bash", "-c", "echo out; echo err >&2"], tmp_path))
    assert out["state"] == "success" and out["exit_code"] == 0
    assert "out" in (out["log"] or "") and "err" in (out["log"] or "")
    log = tmp_path / "dag_id=dag/run_id=run1/task_id=task/attempt=1.log"
    assert out["log_path"] == str(log) and "err" in log.read_text()


def test_a_commands_returned_scratch_log_lives_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # the scratch folder's base
    spec = build_spec(
        KEY, ["bash", "-c", "echo scratch; echo oops >&2; exit 3"], log_root=None,
        return_log=True,
    )  # fmt: skip
    out = runner.run_task(spec)
    assert out["kind"] == "exit_code" and out["log_path"] == runner.MEMORY_LOG
    assert out["log"] == "scratch\noops\n[airdask] task failed: exit code 3\n"
    assert not (tmp_path / "airdask-logs").exists()  # no file was made for it
    kept = runner.run_task({**spec, "return_log": False})  # not returned: kept on the worker
    assert Path(kept["log_path"]).parent == tmp_path / "airdask-logs"
    assert Path(kept["log_path"]).read_text().startswith("scratch\noops\n")


def memory_spec(command: object, **kw: object) -> runner.TaskSpec:
    return build_spec(KEY, command, log_root=None, return_log=True, **kw)  # type: ignore[arg-type]


def test_a_piped_log_is_read_live_and_keeps_split_characters(tmp_path: Path) -> None:
    spec = memory_spec(["bash", "-c", "echo first; sleep 30"])
    result: list[runner.Outcome] = []
    thread = threading.Thread(target=lambda: result.append(runner.run_task(spec)))
    thread.start()
    wait_for(lambda: runner.read_live_log(spec["key"]) == "first\n", timeout=10, what="output")
    assert runner.kill_task(spec["key"], "seen") is True
    thread.join(timeout=10)
    assert result[0]["kind"] == "killed" and result[0]["log"].startswith("first\n")
    # 140,000 bytes of two-byte characters: pipe reads split some of them
    big = runner.run_task(memory_spec(["python3", "-c", "print('é' * 70000, end='')"]))
    assert big["log"] == "é" * 70000


def test_a_piped_log_leaks_no_descriptor_when_the_command_cannot_start(tmp_path: Path) -> None:
    script = tmp_path / "no-shebang"
    script.write_bytes(b"\x00\x01 not a program\n")
    script.chmod(0o755)
    runner.run_task(memory_spec(["true"]))  # the reaper's pipe is made once, before counting
    before = len(os.listdir("/proc/self/fd"))
    for command in ([str(script)], ["no-such-command-here"], [str(tmp_path)]):
        out = runner.run_task(memory_spec(command))
        assert out["state"] == "failed", out
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_timed_out_commands_last_words_reach_its_piped_log(tmp_path: Path) -> None:
    """After SIGTERM the pipe is still read: a command that writes more than a pipe holds
    while it exits is not blocked (and then SIGKILLed with its last line lost)."""
    script = tmp_path / "stubborn.sh"
    script.write_text(
        "on_term() { head -c 200000 /dev/zero | tr '\\0' x; echo; echo last-words; exit 1; }\n"
        "trap on_term TERM\n"
        "sleep 30 & wait\n"
    )
    out = runner.run_task(memory_spec(["bash", str(script)], timeout=1.0))
    log = out["log"] or ""
    assert out["kind"] == "timeout" and "last-words" in log and "x" * 1000 in log


def test_a_child_that_leaves_the_group_does_not_hold_the_attempt(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    command = ["bash", "-c", f"setsid sleep 30 & echo $! > {pids}; echo leader done"]
    started = time.monotonic()
    try:
        out = runner.run_task(memory_spec(command))
        took = time.monotonic() - started
        assert out["state"] == "success" and out["log"] == "leader done\n"
        assert took < 10  # the escaped child keeps the pipe open; it is not waited for
    finally:
        for pid in read_pids(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_nonzero_exit_and_signal(tmp_path: Path) -> None:
    out = runner.run_task(spec_for(["bash", "-c", "exit 3"], tmp_path))
    assert (out["state"], out["kind"], out["reason"]) == ("failed", "exit_code", "exit code 3")
    out = runner.run_task(spec_for(["bash", "-c", "kill -9 $$"], tmp_path))
    assert out["reason"] == "killed by SIGKILL"


def test_command_not_found(tmp_path: Path) -> None:
    out = runner.run_task(spec_for(["no-such-command-xyz", "a"], tmp_path))
    assert out["kind"] == "not_found" and "no-such-command-xyz" in out["reason"]


def test_a_log_that_cannot_be_opened_is_a_failed_outcome(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    out = runner.run_task(spec_for(["touch", str(tmp_path / "ran")], not_a_dir))
    assert (out["state"], out["kind"]) == ("failed", "error")
    assert "cannot open the task log" in out["reason"] and str(not_a_dir) in out["reason"]
    assert not (tmp_path / "ran").exists()


def test_no_shell_for_argv(tmp_path: Path) -> None:
    out = runner.run_task(spec_for(["echo", "$HOME", ";", "true"], tmp_path))
    assert "$HOME ; true" in (out["log"] or "")


def boom(x: int) -> None:
    print("about to fail", x)
    raise ValueError(f"bad value {x}")


def test_python_command_success_exception_and_capture(tmp_path: Path) -> None:
    out = runner.run_task(spec_for(PythonCommand(print, "hello", "py"), tmp_path))
    assert out["state"] == "success" and "hello py" in (out["log"] or "")
    out = runner.run_task(spec_for(PythonCommand(boom, 7), tmp_path))
    assert out["kind"] == "exception" and out["reason"] == "ValueError: bad value 7"
    assert "about to fail 7" in (out["log"] or "") and "Traceback" in (out["log"] or "")


BARRIER = threading.Barrier(2)


def talk(word: str) -> None:
    BARRIER.wait(timeout=10)
    for _ in range(50):
        print(word)


def test_capture_is_per_thread(tmp_path: Path) -> None:
    results: dict[str, runner.Outcome] = {}

    def run(word: str) -> None:
        key = TaskInstanceKey("dag", word, "r")
        spec = build_spec(key, PythonCommand(talk, word), log_root=str(tmp_path), return_log=True)
        results[word] = runner.run_task(spec)

    threads = [threading.Thread(target=run, args=(w,)) for w in ("alpha", "beta")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert "beta" not in (results["alpha"]["log"] or "")
    assert "alpha" not in (results["beta"]["log"] or "")
    assert (results["alpha"]["log"] or "").count("alpha") == 50


CHATTED, RELEASE = threading.Event(), threading.Event()


def chatter(lines: int) -> None:
    for i in range(lines):
        print(f"line {i}")
    CHATTED.set()
    RELEASE.wait(timeout=10)


def test_a_callables_scratch_log_lives_in_memory_with_its_tail(tmp_path: Path) -> None:
    spec = build_spec(
        KEY, PythonCommand(chatter, 200), log_root=None, return_log=True, log_max_bytes=100
    )
    result: list[runner.Outcome] = []
    thread = threading.Thread(target=lambda: result.append(runner.run_task(spec)))
    thread.start()
    assert CHATTED.wait(timeout=10)
    live = runner.read_live_log(spec["key"]) or ""
    assert live.startswith("[airdask] log truncated to its last 100 characters")
    assert live.endswith("line 199\n")  # read live from memory
    RELEASE.set()
    thread.join(timeout=10)
    out = result[0]
    assert out["state"] == "success" and out["log_path"] == runner.MEMORY_LOG
    log = out["log"] or ""
    assert log.startswith("[airdask] log truncated to its last 100 characters")
    assert log.endswith("line 199\n") and "line 0\n" not in log
    assert not (tmp_path / "airdask-logs").exists()


@pytest.mark.parametrize("memory", [False, True], ids=["file-log", "piped-log"])
def test_timeout_kills_the_whole_group(tmp_path: Path, memory: bool) -> None:
    pids = tmp_path / "pids"
    command = spawn_tree_script(pids)
    spec = memory_spec(command, timeout=1.0) if memory else spec_for(command, tmp_path, timeout=1.0)
    out = runner.run_task(spec)
    assert out["kind"] == "timeout" and "timed out after 1s" in out["reason"]
    assert len(read_pids(pids)) == 2
    wait_for(lambda: not any(map(pid_alive, read_pids(pids))), timeout=10, what="group death")


@pytest.mark.parametrize("memory", [False, True], ids=["file-log", "piped-log"])
def test_stray_background_children_are_killed(tmp_path: Path, memory: bool) -> None:
    pids = tmp_path / "pids"
    command = ["bash", "-c", f"sleep 60 & echo $! > {pids}"]
    out = runner.run_task(memory_spec(command) if memory else spec_for(command, tmp_path))
    assert out["state"] == "success"
    wait_for(lambda: not pid_alive(read_pids(pids)[0]), timeout=10, what="stray child death")


def test_kill_task_revokes_a_running_command(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    spec = spec_for(spawn_tree_script(pids), tmp_path)
    result: list[runner.Outcome] = []
    thread = threading.Thread(target=lambda: result.append(runner.run_task(spec)))
    thread.start()
    wait_for(pids_file_complete(pids, 2), timeout=10, what="command start")
    assert runner.running_keys() == [spec["key"]]
    assert (runner.read_live_log(spec["key"]) or "") == ""
    assert runner.kill_task(spec["key"], "revoked by test") is True
    thread.join(timeout=10)
    assert result[0]["kind"] == "killed" and result[0]["reason"] == "killed: revoked by test"
    wait_for(lambda: not any(map(pid_alive, read_pids(pids))), timeout=10, what="group death")
    assert runner.kill_task("unknown-key") is False


def test_kill_all_reaches_an_attempt_whose_process_is_not_registered_yet(
    tmp_path: Path,
) -> None:
    """terminate() right after a fork: the attempt is running but its process is not in the
    runner's table yet. Its log is a FIFO here, so the attempt waits, deterministically,
    between becoming 'running' and starting its command."""
    pids = tmp_path / "pids"
    spec = spec_for(spawn_tree_script(pids), tmp_path, return_log=False)  # not read back
    log = tmp_path / spec["log_relpath"]
    log.parent.mkdir(parents=True)
    os.mkfifo(log)
    result: list[runner.Outcome] = []
    thread = threading.Thread(target=lambda: result.append(runner.run_task(spec)))
    thread.start()
    wait_for(lambda: runner.running_keys() == [spec["key"]], timeout=10, what="attempt start")
    assert runner.kill_all("terminated") == []  # no process to kill yet
    reader = os.open(log, os.O_RDONLY | os.O_NONBLOCK)  # lets the attempt open its log
    try:
        thread.join(timeout=20)
        assert not thread.is_alive()
    finally:
        os.close(reader)
    assert result[0]["kind"] == "killed" and result[0]["reason"] == "killed: terminated"
    wait_for(lambda: not any(map(pid_alive, read_pids(pids))), timeout=10, what="group death")


HOST_SCRIPT = """
import os
import sys
import tempfile
from airdask import runner
from airdask.commands import build_spec
from airdask.state import TaskInstanceKey
if os.environ.get("TEST_SKIP_REGISTRATION"):  # the instant between fork and registration
    send = runner.reaper_send
    runner.reaper_send = lambda rt, line: None if line.startswith("+") else send(rt, line)
    runner.ensure_reaper(runner._runtime())
spec = build_spec(TaskInstanceKey("d", "t", "r"), sys.argv[2:], log_root=sys.argv[1],
                  return_log=False)
runner.run_task(spec)
"""


@pytest.mark.parametrize("registered", [True, False])
def test_reaper_kills_commands_when_host_process_is_killed(
    tmp_path: Path, registered: bool
) -> None:
    """A SIGKILLed host (say, a Dask worker) leaves no orphan command behind, even one it
    forked in the last instant, before it could register it with its reaper."""
    pids = tmp_path / "pids"
    env = dict(os.environ)
    if not registered:
        env["TEST_SKIP_REGISTRATION"] = "1"
    host = subprocess.Popen(
        [sys.executable, "-c", HOST_SCRIPT, str(tmp_path), *spawn_tree_script(pids)], env=env
    )
    try:
        wait_for(pids_file_complete(pids, 2), timeout=30, what="command start")
        assert all(map(pid_alive, read_pids(pids)))
        os.kill(host.pid, signal.SIGKILL)
        host.wait(timeout=10)
        wait_for(lambda: not any(map(pid_alive, read_pids(pids))), timeout=30, what="orphans")
    finally:
        host.kill()


# The reaper of a host on a loaded machine may be slower to start than the host to die: it
# waits here for the file GO, which the test makes once it has SIGKILLed the host.
LATE_REAPER_HOST_SCRIPT = """
import os
import sys
from airdask import runner, supervision
from airdask.commands import build_spec
from airdask.state import TaskInstanceKey
go = os.path.join(sys.argv[1], "go")
supervision.REAPER_SOURCE = (
    "import os, time\\nwhile not os.path.exists(%r): time.sleep(0.01)\\n" % go
    + supervision.REAPER_SOURCE
)
send = runner.reaper_send  # the command is forked, not yet registered, when the host dies
runner.reaper_send = lambda rt, line: None if line.startswith("+") else send(rt, line)
spec = build_spec(TaskInstanceKey("d", "t", "r"), sys.argv[2:], log_root=sys.argv[1],
                  return_log=False)
runner.run_task(spec)
"""


def test_a_reaper_that_starts_after_its_host_died_still_kills_its_commands(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    host = subprocess.Popen(
        [sys.executable, "-c", LATE_REAPER_HOST_SCRIPT, str(tmp_path), *spawn_tree_script(pids)]
    )
    try:
        wait_for(pids_file_complete(pids, 2), timeout=30, what="command start")
        os.kill(host.pid, signal.SIGKILL)
        host.wait(timeout=10)
        (tmp_path / "go").touch()
        wait_for(lambda: not any(map(pid_alive, read_pids(pids))), timeout=10, what="orphans")
    finally:
        host.kill()
        for pid in read_pids(pids):  # what the reaper missed must not outlive the test
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


class Unpicklable:
    def __init__(self) -> None:
        self.lock = threading.Lock()


def test_unpicklable_argument_is_named() -> None:
    with pytest.raises(CommandError, match=r"argument 0 of print \(Unpicklable object\)"):
        PythonCommand(print, Unpicklable()).payload()
    with pytest.raises(CommandError, match=r"keyword argument 'x'"):
        PythonCommand(print, x=threading.Lock()).payload()


@pytest.mark.parametrize("bad", ["echo hi", [], [1, 2], None, ("a", 3)])
def test_bad_commands_are_refused(bad: object) -> None:
    with pytest.raises(CommandError, match="non-empty list of strings or a PythonCommand"):
        check_command(bad)


def test_dask_key_is_unique_per_attempt_and_groups_by_task() -> None:
    from dask.utils import key_split

    keys = {
        dask_key(TaskInstanceKey("d", "t", "r", 1)),
        dask_key(TaskInstanceKey("d", "t", "r", 2)),
        dask_key(TaskInstanceKey("d", "t", "r2", 1)),
        dask_key(TaskInstanceKey("d", "t", "r", 1, 0)),
        dask_key(TaskInstanceKey("d-x", "t", "r", 1)),
        dask_key(TaskInstanceKey("d_x", "t", "r", 1)),
    }
    assert len(keys) == 6
    assert dask_key(TaskInstanceKey("d", "t", "r")) == dask_key(TaskInstanceKey("d", "t", "r"))
    assert key_split(dask_key(TaskInstanceKey("etl", "load", "manual__2026", 3))) == "etl.load"
    assert key_split(dask_key(TaskInstanceKey("my-dag", "a-b", "r", 1, 5))) == "my_dag.a_b"


def test_every_outcome_is_pushed_and_a_long_log_is_kept_on_the_worker(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    pushed: list[dict[str, object]] = []
    got = threading.Event()

    def on_finished(event: object) -> None:
        pushed.append(event[1])  # type: ignore[index]
        got.set()

    long_line = "x" * 100
    script = f"for i in $(seq 1 400); do echo {long_line}$i; done"
    spec = build_spec(KEY, ["bash", "-c", script], log_root=None, return_log=True)
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.subscribe_topic(runner.FINISHED_TOPIC, on_finished)
        outcome = client.submit(runner.run_task, spec, key=spec["key"], pure=False).result()
        assert got.wait(10), "no outcome pushed"
        (message,) = pushed
        assert message["log_kept"] is True and outcome["log_kept"] is False
        assert len(message["log"]) == runner.PUSH_LOG_MAX  # type: ignore[arg-type]
        assert str(message["log"]).endswith(f"{long_line}400\n")
        kept = client.run(runner.take_kept_logs, [spec["key"], "unknown"])
        (texts,) = kept.values()
        assert texts == {spec["key"]: outcome["log"], "unknown": None}
        assert texts[spec["key"]].startswith(f"{long_line}1\n")
        again = client.run(runner.take_kept_logs, [spec["key"]])
        assert list(again.values()) == [{spec["key"]: None}]  # taken once


def test_private_files_reach_the_command_by_path_never_by_argv(tmp_path: Path) -> None:
    secret = "token-" + "x" * 20
    script = (
        "import os, stat, sys; d = sys.argv[1]; p = os.path.join(d, 'w.json');"
        "print(oct(stat.S_IMODE(os.stat(d).st_mode)), oct(stat.S_IMODE(os.stat(p).st_mode)));"
        "print(open(p).read()); print(open('/proc/self/cmdline').read())"
    )
    command = ArgvWithFiles(["{python}", "-c", script, "{files}"], files={"w.json": secret})
    assert secret not in repr(command)
    spec = spec_for(command, tmp_path)
    out = runner.run_task(spec)
    assert out["state"] == "success", out["log"]
    lines = (out["log"] or "").splitlines()
    assert lines[0] == "0o700 0o600" and lines[1] == secret
    assert secret not in lines[2] and sys.executable in lines[2]  # argv: the folder, not it
    folder = lines[2].split("\0")[3]
    assert folder.startswith(tempfile.gettempdir()) and not os.path.exists(folder)


def test_private_files_are_removed_when_the_command_fails_or_times_out(tmp_path: Path) -> None:
    record = tmp_path / "folder"
    for argv, kind in (
        (["bash", "-c", f"echo {{files}} > {record}; exit 4"], "exit_code"),
        (["bash", "-c", f"echo {{files}} > {record}; sleep 30"], "timeout"),
    ):
        command = ArgvWithFiles(argv, files={"a": "1"})
        out = runner.run_task(spec_for(command, tmp_path, timeout=1.0))
        assert out["kind"] == kind
        folder = record.read_text().strip()
        assert folder and not os.path.exists(folder)


def test_a_private_file_name_with_a_path_is_refused(tmp_path: Path) -> None:
    out = runner.run_task(spec_for(ArgvWithFiles(["true"], files={"../x": "1"}), tmp_path))
    assert out["kind"] == "error" and "not a plain file name" in out["reason"]
    assert not (tmp_path.parent / "x").exists()


def test_one_attempt_runs_once_at_a_time_in_a_process(tmp_path: Path) -> None:
    """Two calls for one key at once (Dask executing a key twice on one worker): the command
    runs once, and the second call returns the first one's outcome."""
    ledger = tmp_path / "ledger"
    release = tmp_path / "release"
    script = f"echo start >> {ledger}; while [ ! -e {release} ]; do sleep 0.02; done; echo end"
    spec = build_spec(KEY, ["bash", "-c", script], log_root=None, return_log=True)
    outcomes: list[runner.Outcome] = []
    calls = [threading.Thread(target=lambda: outcomes.append(runner.run_task(spec)))
             for _ in range(2)]  # fmt: skip
    calls[0].start()
    wait_for(ledger.exists, timeout=10, what="the first run's start")
    first = runner._runtime().runs[spec["key"]]
    calls[1].start()
    wait_for(lambda: first.waiters == 1, timeout=10, what="the second call waiting")
    release.touch()
    for call in calls:
        call.join(timeout=20)
    assert ledger.read_text() == "start\n"  # one command, not two
    assert len(outcomes) == 2 and outcomes[0] is outcomes[1]
    assert outcomes[0]["kind"] == "success" and "end" in (outcomes[0]["log"] or "")
