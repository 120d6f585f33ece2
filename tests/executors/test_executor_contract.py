"""The executor contract, run against every executor in ``executor_support.FACTORIES``."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airdask import PythonCommand
from airdask.config import Config
from airdask.executors import BaseExecutor, EventInfo
from airdask.executors.sequential import SequentialExecutor
from airdask.logs import read_log
from airdask.state import TaskInstanceState
from airdask.testing import drain, make_ti
from executor_support import FACTORIES
from proc_support import pid_alive, pids_file_complete, read_pids, spawn_tree_script, wait_for
from task_funcs import fail_with, ledger_task, max_concurrency, say, start_order

S = TaskInstanceState
MakeExecutor = Callable[..., BaseExecutor]


@pytest.fixture(params=sorted(FACTORIES))
def make_executor(request: pytest.FixtureRequest, config: Config) -> Iterator[MakeExecutor]:
    built: list[BaseExecutor] = []

    def make(parallelism: int | None = None) -> BaseExecutor:
        executor = FACTORIES[request.param](request, config, parallelism)
        executor.start()
        built.append(executor)
        return executor

    yield make
    for executor in built:
        with contextlib.suppress(Exception):  # already ended by the test
            executor.terminate()
        executor.get_event_buffer()


def is_inline(executor: BaseExecutor) -> bool:
    """Sequential/Debug run commands inside heartbeat(): drive them from a thread."""
    return isinstance(executor, SequentialExecutor)


def test_outcomes_and_reasons(make_executor: MakeExecutor) -> None:
    ex = make_executor()
    tis = {
        "ok": (make_ti("ok"), ["true"]),
        "exit": (make_ti("exit"), ["bash", "-c", "exit 4"]),
        "raise": (make_ti("raise"), PythonCommand(fail_with, "no luck")),
        "missing": (make_ti("missing"), ["airdask-no-such-binary"]),
        "py": (make_ti("py"), PythonCommand(say, "hi")),
    }
    for ti, command in tis.values():
        ex.queue_command(ti, command)
    events = drain(ex, [ti.key for ti, _ in tis.values()])
    state = {name: events[ti.key][0] for name, (ti, _) in tis.items()}
    assert state == {"ok": S.SUCCESS, "exit": S.FAILED, "raise": S.FAILED,
                     "missing": S.FAILED, "py": S.SUCCESS}  # fmt: skip
    reason = {name: str(events[ti.key][1]) for name, (ti, _) in tis.items()}
    assert reason["exit"] == "exit code 4"
    assert reason["raise"] == "RuntimeError: no luck"
    assert (
        "command not found" in reason["missing"] and "airdask-no-such-binary" in reason["missing"]
    )
    info = events[tis["exit"][0].key][1]
    assert isinstance(info, EventInfo) and info.exit_code == 4 and info.kind == "exit_code"
    assert not ex.running and not ex.queued_tasks


def test_has_task_before_during_after(make_executor: MakeExecutor) -> None:
    ex = make_executor()
    ti = make_ti("t")
    assert not ex.has_task(ti)
    ex.queue_command(ti, ["true"])
    assert ex.has_task(ti) and ex.slots_occupied == 1
    ex.queue_command(ti, ["true"])  # a second queue_command is ignored
    assert len(ex.queued_tasks) == 1
    drain(ex, [ti.key])
    assert not ex.has_task(ti) and ex.slots_occupied == 0


@pytest.mark.parametrize("parallelism", [1, 2])
def test_parallelism_is_never_exceeded(
    make_executor: MakeExecutor, tmp_path: Path, parallelism: int
) -> None:
    ex = make_executor(parallelism)
    limit = ex.parallelism
    ledger = str(tmp_path / "ledger")
    tis = [make_ti(f"t{i}") for i in range(6)]
    for i, ti in enumerate(tis):
        ex.queue_command(ti, PythonCommand(ledger_task, ledger, f"t{i}", 0.3))
    assert ex.slots_available == limit - 6
    drain(ex, [ti.key for ti in tis])
    peak = max_concurrency(ledger)
    assert peak <= limit
    if limit > 1:
        assert peak == limit, "the executor never used its parallelism"


def test_priority_order_highest_first_ties_in_insertion_order(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    ex = make_executor(1)
    ledger = str(tmp_path / "ledger")
    plan = [("a", 1), ("b", 5), ("c", 3), ("d", 5), ("e", 2)]
    tis = []
    for name, priority in plan:
        ti = make_ti(name)
        tis.append(ti)
        ex.queue_command(ti, PythonCommand(ledger_task, ledger, name, 0.0), priority=priority)
    drain(ex, [ti.key for ti in tis])
    assert start_order(ledger) == ["b", "d", "c", "e", "a"]


def test_get_event_buffer_filters_by_dag(make_executor: MakeExecutor) -> None:
    ex = make_executor()
    first, second = make_ti("t", dag_id="first"), make_ti("t", dag_id="second")
    ex.queue_command(first, ["true"])
    ex.queue_command(second, ["true"])
    drain(ex, [first.key], dag_ids=["first"])
    wait_for(lambda: _has_terminal(ex, second.key), timeout=60, what="second's event")
    assert set(ex.get_event_buffer(["first"])) == set()
    remaining = ex.get_event_buffer(["second"])
    assert set(remaining) == {second.key} and remaining[second.key][0] is S.SUCCESS
    assert ex.get_event_buffer() == {}


def _has_terminal(ex: BaseExecutor, key: Any) -> bool:
    ex.heartbeat()
    entry = ex.event_buffer.get(key)
    return entry is not None and entry[0] in (S.SUCCESS, S.FAILED)


def test_end_waits_for_running_work(make_executor: MakeExecutor, tmp_path: Path) -> None:
    ex = make_executor()
    ledger = str(tmp_path / "ledger")
    tis = [make_ti(f"t{i}") for i in range(3)]
    for i, ti in enumerate(tis):
        ex.queue_command(ti, PythonCommand(ledger_task, ledger, f"t{i}", 0.4))
    ex.heartbeat()
    ex.end()
    assert start_order(ledger) and max_concurrency(ledger) >= 1
    events = ex.get_event_buffer()
    assert {k for k, (s, _) in events.items() if s is S.SUCCESS} == {ti.key for ti in tis}
    assert not ex.running


def test_running_is_reported_before_the_outcome(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    """Each executor reports RUNNING itself when an attempt starts (ADR 0005): without it a
    long attempt would be taken for stuck in queued."""
    ex = make_executor()
    if is_inline(ex):
        pytest.skip("runs inside heartbeat(): its RUNNING is replaced by the outcome at once")
    gate = tmp_path / "gate"
    ti = make_ti("gated")
    ex.queue_command(ti, ["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.02; done"])
    seen: list[Any] = []

    def started() -> bool:
        ex.heartbeat()
        seen.extend(
            info
            for key, (state, info) in ex.get_event_buffer().items()
            if key == ti.key and state is S.RUNNING
        )
        return bool(seen)

    wait_for(started, timeout=60, what="a RUNNING event")
    assert isinstance(seen[0], EventInfo) and seen[0].kind == "running"
    gate.touch()
    assert drain(ex, [ti.key])[ti.key][0] is S.SUCCESS


def test_end_and_terminate_may_repeat(make_executor: MakeExecutor) -> None:
    """end() twice, end() after terminate(), terminate() after end(): the later calls do
    nothing and raise nothing (a timed-out run is terminated, then ended by the stop)."""
    ex = make_executor()
    ti = make_ti("once")
    ex.queue_command(ti, ["true"])
    ex.heartbeat()
    ex.end()
    ex.end()
    ex.terminate()
    states = [state for key, (state, _) in ex.get_event_buffer().items() if key == ti.key]
    assert states == [S.SUCCESS] and not ex.running
    other = make_executor()
    other.terminate()
    other.end()
    other.terminate()
    assert not other.running and not other.get_event_buffer()


def test_terminate_leaves_no_process(make_executor: MakeExecutor, tmp_path: Path) -> None:
    ex = make_executor(2)
    pid_files = [tmp_path / f"pids{i}" for i in range(ex.parallelism)]
    tis = [make_ti(f"t{i}") for i in range(len(pid_files))]
    for ti, pid_file in zip(tis, pid_files, strict=True):
        ex.queue_command(ti, spawn_tree_script(pid_file))
    worker = threading.Thread(target=ex.heartbeat) if is_inline(ex) else None
    if worker:
        worker.start()
    else:
        ex.heartbeat()
    for pid_file in pid_files:
        wait_for(pids_file_complete(pid_file, 2), timeout=60, what=f"{pid_file.name} start")
    ex.terminate()
    if worker:
        worker.join(timeout=30)
    pids = [pid for f in pid_files for pid in read_pids(f)]
    wait_for(lambda: not any(map(pid_alive, pids)), timeout=15, what="every process gone")
    events = ex.get_event_buffer()
    assert {key for key, (state, _) in events.items() if state is S.FAILED} == {t.key for t in tis}
    assert not ex.running


def test_logs_via_get_task_log_and_on_disk(make_executor: MakeExecutor, config: Config) -> None:
    ex = make_executor()
    argv_ti, py_ti = make_ti("argv", try_number=2), make_ti("py")
    ex.queue_command(argv_ti, ["bash", "-c", "echo from-argv; echo to-stderr >&2"])
    ex.queue_command(py_ti, PythonCommand(say, "from-python"))
    drain(ex, [argv_ti.key, py_ti.key])
    _, lines = ex.get_task_log(argv_ti, 2)
    assert "from-argv" in lines and "to-stderr" in lines
    _, lines = ex.get_task_log(py_ti, 1)
    assert "from-python" in lines
    messages, lines = read_log(config.logging.base_log_folder, argv_ti.key)  # on disk
    assert "attempt=2.log" in messages[0] and "from-argv" in lines
    messages, lines = ex.get_task_log(py_ti, 7)
    assert lines == [] and messages


def test_a_bad_task_does_not_escape_heartbeat(make_executor: MakeExecutor) -> None:
    ex = make_executor()
    bad, unpicklable, good = make_ti("bad"), make_ti("unpicklable"), make_ti("good")
    ex.queue_command(bad, "echo this is not an argv")  # type: ignore[arg-type]
    ex.queue_command(unpicklable, PythonCommand(say, threading.Lock()))
    ex.queue_command(good, ["true"])
    events = drain(ex, [bad.key, unpicklable.key, good.key])
    assert events[good.key][0] is S.SUCCESS
    assert events[bad.key][0] is S.FAILED and "list of strings" in str(events[bad.key][1])
    assert events[unpicklable.key][0] is S.FAILED
    assert "argument 0 of say (lock object)" in str(events[unpicklable.key][1])
    assert not ex.running


def test_execution_timeout(make_executor: MakeExecutor) -> None:
    ex = make_executor()
    ti = make_ti("slow", executor_config={"execution_timeout": 0.5})
    ex.queue_command(ti, ["sleep", "30"])
    state, info = drain(ex, [ti.key])[ti.key]
    assert state is S.FAILED and "timed out after 0.5s" in str(info)


def test_send_callback_reaches_the_sink(make_executor: MakeExecutor) -> None:
    ex = make_executor()
    received: list[Any] = []

    class Sink:
        def send(self, request: Any) -> None:
            received.append(request)

    with pytest.raises(ValueError, match="callback sink"):
        ex.send_callback("early")
    ex.callback_sink = Sink()
    ex.send_callback({"dag_id": "d", "msg": "x"})
    assert received == [{"dag_id": "d", "msg": "x"}]


def test_a_command_knows_its_run_context(make_executor: MakeExecutor, tmp_path: Path) -> None:
    ex = make_executor()
    out = tmp_path / "ctx"
    ti = make_ti("ctx_task", run_id="run-7", try_number=3, map_index=2)
    script = 'env | grep "^AIRDASK_CTX_" | sort > "$0"'
    ex.queue_command(ti, ["bash", "-c", script, str(out)])
    assert drain(ex, [ti.key])[ti.key][0] is S.SUCCESS
    assert out.read_text().split() == [
        "AIRDASK_CTX_DAG_ID=contract",
        "AIRDASK_CTX_MAP_INDEX=2",
        "AIRDASK_CTX_RUN_ID=run-7",
        "AIRDASK_CTX_TASK_ID=ctx_task",
        "AIRDASK_CTX_TRY_NUMBER=3",
    ]


def test_results_and_run_context_travel_with_the_attempt(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    """What results between tasks and the run context ask of an executor: a callable's
    return value comes back in its outcome (JSON, or cloudpickle when JSON would change
    it), one larger than its cap fails the attempt, and an argv's run environment reaches
    the command beside the key's own variables."""
    from airdask.commands import ArgvInRun
    from airdask.scheduler.results import decode
    from task_funcs import make_blob, make_rows, make_tuple

    ex = make_executor()
    large = PythonCommand(make_blob, 100)
    large.max_result_bytes = 50
    out = tmp_path / "env.out"
    script = f'echo "$AIRDASK_CTX_CONF $AIRDASK_CTX_TRY_NUMBER $AIRDASK_CTX_TASK_ID" > {out}'
    commands = {
        "rows": PythonCommand(make_rows, 2),
        "tuple": PythonCommand(make_tuple),
        "large": large,
        "argv": ArgvInRun(["bash", "-c", script], env={"AIRDASK_CTX_CONF": '{"n": 1}'}),
    }
    tis = {name: make_ti(name, try_number=2) for name in commands}
    for name, command in commands.items():
        ex.queue_command(tis[name], command)
    events = drain(ex, [ti.key for ti in tis.values()])
    infos = {name: events[ti.key][1] for name, ti in tis.items()}
    assert events[tis["rows"].key][0] == S.SUCCESS
    assert infos["rows"].result_format == "json"
    assert decode(infos["rows"].result_format, infos["rows"].result) == make_rows(2)
    assert infos["tuple"].result_format == "pickle"
    assert decode("pickle", infos["tuple"].result) == (1, "two", {3})
    assert events[tis["large"].key][0] == S.FAILED and infos["large"].kind == "result_error"
    assert "is larger than [core] max_result_bytes = 50" in infos["large"].reason
    assert infos["large"].result is None
    assert events[tis["argv"].key][0] == S.SUCCESS and infos["argv"].result is None
    assert out.read_text() == '{"n": 1} 2 argv\n'
