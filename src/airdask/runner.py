"""What runs on a worker: supervise one command, capture its log, report the outcome.

This module and :mod:`airdask.supervision` (its process and output plumbing) are
self-contained (stdlib, plus ``distributed`` when run on a Dask worker) so that executors can
ship them by value (:func:`airdask.executors.dask.shipping.register_runner`) to a cluster
where airdask is not installed. They know nothing of DAGs or the metadata store.

Process supervision:

* an argv runs without a shell in its own process group (``start_new_session``);
* the group is killed on revoke (:func:`kill_task`), on timeout, and when the command's
  leader exits (stray background children do not outlive their task);
* if the process hosting the runner dies (a SIGKILLed Dask worker), a small *reaper* process
  notices its pipe closing and kills every group still registered, so no orphan keeps running
  while Dask reruns the task elsewhere.

State shared between calls lives in a synthetic module in ``sys.modules`` because each
by-value copy of this module gets globals of its own.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from collections.abc import Iterator
from typing import Any, Literal, TypedDict

from airdask.supervision import (
    HOST_ENV,
    OutputPump,
    StartReporter,
    TailBuffer,
    ensure_reaper,
    killpg,
    log_text,
    open_log,
    reaper_send,
    route_output,
    signal_name,
)
from airdask.supervision import START_REPORT_DELAY as START_REPORT_DELAY
from airdask.supervision import STARTED_TOPIC as STARTED_TOPIC

RUNTIME_MODULE = "_airdask_runtime_6"  # bumped when the runtime's shape changes
#: Every outcome is pushed on this topic: it is how the executor learns it (no attempt's
#: result is ever fetched or held; see executors/dask/keeper.py). The pushed log is at most
#: PUSH_LOG_MAX characters (the Dask scheduler keeps the last events of a topic, and the
#: keeper its unacknowledged outcomes, in memory); a longer tail stays on the worker
#: (``Outcome.log_kept``) until the executor takes it with :func:`take_kept_logs`.
FINISHED_TOPIC = "airdask-task-finished"
PUSH_LOG_MAX = 16 * 1024
#: Most characters of kept logs per worker process; past it the oldest are dropped (the
#: executor then records the pushed tail, and says so).
KEPT_LOGS_MAX = 256 * 1024 * 1024
KILL_GRACE_SECONDS = 2.0
#: ``Outcome.log_path`` of a returned scratch log, which is kept in memory.
MEMORY_LOG = "(in memory)"
#: The module in which a worker keeps airdask's shipped functions (executors.dask.shipping)
#: and, where its worker plugin runs, the outcomes the plugin is to send.
SHIPPED_MODULE = "_airdask_shipped"
#: Most outcomes left for the plugin: past that it is presumed gone, and the runner sends.
PLUGIN_QUEUE_MAX = 10_000


#: What happened to an attempt: the one vocabulary of runner outcomes (:class:`Outcome`) and
#: of executor events (``airdask.executors.events.EventInfo.kind``).
OutcomeKind = Literal[
    "queued",  # an executor handed the attempt to its cluster (an event, not an outcome)
    "running",  # the attempt started (an event, not an outcome)
    "success",
    "exit_code",  # the command exited non-zero, or a signal killed it
    "exception",  # the Python callable raised
    "not_found",  # the command could not be started (missing, not executable)
    "timeout",  # execution_timeout passed; the process group was killed
    "killed",  # revoked, terminated, or cancelled before or while it ran
    "worker_died",  # the process running it died (a SIGKILLed Dask worker, a dead child)
    "connection_lost",  # the outcome is unknown (scheduler lost), not that the task failed
    "no_worker",  # no worker can run it (pool resources, strict policy)
    "submit_error",  # the executor could not start it
    "result_error",  # a callable's return value too large or impossible to keep
    "error",  # anything else around the task: its log, the runner, Dask
    "unknown",  # a third-party executor's info that is no EventInfo
]
#: The three things an attempt's run reports: its kind, the reason, the exit code.
RunResult = tuple[OutcomeKind, str, int | None]


class _TaskSpecOptional(TypedDict, total=False):
    #: Private files of an argv attempt, {name: content} (see :func:`private_files`).
    files: dict[str, str]
    #: The log's first line (the command as rendered for its run).
    header: str
    #: Keep a callable's return value up to this many bytes (see :func:`encode_result`);
    #: absent: keep nothing.
    result_max_bytes: int


class TaskSpec(_TaskSpecOptional):
    """A self-contained description of one attempt (plain data, so it pickles anywhere)."""

    key: str  # unique per attempt; also the Dask key
    label: str  # human-readable "dag.task run try"
    argv: list[str] | None
    payload: bytes | None  # cloudpickle of (func, args, kwargs)
    log_relpath: str
    log_root: str | None  # None: scratch (in memory if returned, else a worker-local file)
    timeout: float | None
    return_log: bool
    log_max_bytes: int
    capture_python_output: bool  # False: a callable's output also reaches the terminal
    env: dict[str, str]  # added to a command's environment (the AIRDASK_CTX_* run context)


class Outcome(TypedDict):
    key: str
    state: str  # "success" or "failed"
    kind: OutcomeKind
    reason: str
    exit_code: int | None
    hostname: str
    worker: str | None  # the Dask worker's address, when run by one
    pid: int
    started_at: float
    ended_at: float
    log_path: str
    log: str | None
    log_kept: bool  # log holds the last PUSH_LOG_MAX characters; the worker keeps the rest
    # A kept return value adds "result" (bytes, see encode_result) and "result_format"
    # ("json" or "pickle"): see _add_result. (Not declared here: a TypedDict with optional
    # keys needs NotRequired or a TypedDict base, and neither survives shipping by value
    # on Python 3.10.)


def _runtime() -> Any:
    rt: Any = sys.modules.get(RUNTIME_MODULE)
    if rt is None:
        rt = types.ModuleType(RUNTIME_MODULE)
        rt.lock = threading.RLock()
        rt.procs = {}  # key -> Popen of a running argv
        rt.unstarted = set()  # keys of argv attempts running but without a process yet
        rt.revoked = {}  # key -> reason
        rt.log_paths = {}  # key -> log path (or in-memory log) of a running attempt
        rt.runs = {}  # key -> _Run of the attempt running in this process
        rt.kept_logs = collections.OrderedDict()  # key -> log tail too long to push
        rt.kept_chars = 0
        rt.results = {}  # key -> (format, data) of a callable's return value, until reported
        rt.reaper = None
        rt.stdout_proxy = None
        rt.stderr_proxy = None
        rt.starts = StartReporter()
        rt.hostname = socket.gethostname()
        rt = sys.modules.setdefault(RUNTIME_MODULE, rt)
    return rt


def _worker() -> Any:
    if "distributed" not in sys.modules:  # not on a Dask worker (and no import to learn it)
        return None
    try:
        from distributed import get_worker

        return get_worker()
    except Exception:  # not inside a Dask worker
        return None


def _log_file(spec: TaskSpec, worker: Any) -> str:
    """Where the attempt writes its log: under ``log_root`` in the shared layout, or, with
    no root and the log not returned (so kept on the worker), a file in one flat
    worker-local folder. A returned scratch log lives in memory (no file at all)."""
    if spec["log_root"]:
        return os.path.join(spec["log_root"], spec["log_relpath"])
    base = getattr(worker, "local_directory", None) or tempfile.gettempdir()
    name = re.sub(r"[^A-Za-z0-9._=+-]", "_", spec["key"])  # the key ends with a digest
    return os.path.join(base, "airdask-logs", name + ".log")


#: In an argv with private files, this placeholder stands for their folder.
FILES_PLACEHOLDER = "{files}"
#: In an argv, this placeholder stands for the Python interpreter running the runner.
PYTHON_PLACEHOLDER = "{python}"


@contextlib.contextmanager
def private_files(spec: TaskSpec) -> Iterator[list[str]]:
    """The attempt's argv, with its private files written for the time it runs.

    ``spec["files"]`` ({name: content}) are written with mode 0600 into a fresh folder only
    this user can enter (0700) before the command starts, and the folder is removed when the
    block ends, whatever happens. ``{files}`` in an argument stands for that folder and
    ``{python}`` for this interpreter, so a secret (a token, say) reaches the command
    through a file and never through its argv, which every user can read in ``ps``.
    """
    argv = [a.replace(PYTHON_PLACEHOLDER, sys.executable) for a in spec["argv"] or []]
    files = spec.get("files")
    if not files:
        yield argv
        return
    folder = tempfile.mkdtemp(prefix="airdask-files-")  # mode 0700
    try:
        for name, content in files.items():
            if os.path.basename(name) != name or name in ("", ".", ".."):
                raise ValueError(f"private file name {name!r} is not a plain file name")
            fd = os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(content)
        yield [a.replace(FILES_PLACEHOLDER, folder) for a in argv]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_argv(spec: TaskSpec, rt: Any, log: Any) -> RunResult:
    with private_files(spec) as argv:
        if not isinstance(log, TailBuffer):
            log.flush()
            return _supervise(spec, argv, rt, log, None)
        # A scratch log lives in memory: the output comes through a pipe (see OutputPump).
        pump = OutputPump(log)
        try:
            return _supervise(spec, argv, rt, pump.write_fd, pump)
        finally:
            pump.close()  # on every path: a long-lived worker must not leak descriptors


def _command_env(extra: dict[str, str]) -> dict[bytes, bytes]:
    """This process's environment, ``extra`` and :data:`HOST_ENV`, as bytes. Copied from
    the environment's own bytes dict where there is one: rebuilding it from ``os.environ``
    decodes and re-encodes every variable, the largest Python cost of starting a command."""
    data = getattr(os.environ, "_data", None)  # CPython's encoded copy, kept current
    env: dict[bytes, bytes] = dict(data) if isinstance(data, dict) else dict(os.environb)
    for name, value in extra.items():
        env[os.fsencode(name)] = os.fsencode(value)
    env[HOST_ENV.encode()] = str(os.getpid()).encode()
    return env


def _supervise(
    spec: TaskSpec, argv: list[str], rt: Any, stdout: Any, pump: OutputPump | None
) -> RunResult:
    key = spec["key"]
    ensure_reaper(rt)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_command_env(spec.get("env", {})),
        )
    except FileNotFoundError:
        return "not_found", f"command not found: {argv[0]!r}", None
    except PermissionError as exc:
        return "not_found", f"command not executable: {argv[0]!r} ({exc.strerror})", None
    if pump is not None:
        pump.started()
    reaper_send(rt, f"+{proc.pid}")  # first: until then a dying host would orphan it
    with rt.lock:
        rt.procs[key] = proc
        rt.unstarted.discard(key)
    try:
        if key in rt.revoked:  # revoked between submit and start
            killpg(proc.pid, signal.SIGKILL)
        try:
            timeout = spec["timeout"]
            code = proc.wait(timeout) if pump is None else pump.wait(proc, timeout)
        except subprocess.TimeoutExpired:
            killpg(proc.pid, signal.SIGTERM)
            try:  # its last words (a stack dump, say) still go to the log meanwhile
                if pump is None:
                    proc.wait(KILL_GRACE_SECONDS)
                else:
                    pump.wait(proc, KILL_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return "timeout", f"timed out after {spec['timeout']:g}s; process group killed", None
    finally:
        killpg(proc.pid, signal.SIGKILL)  # stray children of a finished leader
        if pump is not None:
            pump.drain()
        with rt.lock:
            rt.procs.pop(key, None)
        reaper_send(rt, f"-{proc.pid}")
    revoked = rt.revoked.get(key)
    if revoked is not None:
        return "killed", f"killed: {revoked}", code
    if code == 0:
        return "success", "exit code 0", 0
    if code < 0:
        return "exit_code", f"killed by {signal_name(-code)}", code
    return "exit_code", f"exit code {code}", code


#: The outcome kind of a return value too large (or impossible) to keep.
RESULT_KIND: OutcomeKind = "result_error"


def encode_result(value: Any, max_bytes: int) -> tuple[str, bytes]:
    """``(format, data)`` of a return value: JSON when it comes back equal (so tuples,
    sets, NaN, objects go to cloudpickle), else cloudpickle.

    :raises ValueError: the value is longer than ``max_bytes`` once encoded, or cannot be
        encoded at all; the message says which and how long.
    """
    import json

    import cloudpickle

    fmt, data = "json", b""
    try:
        text = json.dumps(value)
        if json.loads(text) != value:
            raise ValueError("does not round-trip")
        data = text.encode()
    except (TypeError, ValueError, RecursionError):
        fmt = "pickle"
        try:
            data = cloudpickle.dumps(value)
        except Exception as exc:
            raise ValueError(
                f"the return value ({type(value).__name__}) cannot be kept: "
                f"neither JSON nor cloudpickle can encode it ({type(exc).__name__}: {exc})"
            ) from None
    if len(data) > max_bytes:
        raise ValueError(
            f"the return value ({type(value).__name__}, {len(data)} bytes as {fmt}) is larger "
            f"than [core] max_result_bytes = {max_bytes}: return a path or a reference to "
            "where the data is instead"
        )
    return fmt, data


def _call(spec: TaskSpec, rt: Any, log: Any) -> RunResult:
    import cloudpickle

    result: dict[str, Any] = {}

    def target() -> None:
        proxies = route_output(rt, log, tee=not spec["capture_python_output"])
        try:
            func, args, kwargs = cloudpickle.loads(spec["payload"])
            value = func(*args, **kwargs)
            cap = spec.get("result_max_bytes")
            if cap is not None:
                try:
                    result["kept"] = encode_result(value, cap)
                except ValueError as exc:
                    result["result_error"] = str(exc)
        except BaseException as exc:  # the task's failure, reported as its outcome
            traceback.print_exc(file=log)
            result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            for proxy in proxies:
                proxy.local.target = None

    if spec["timeout"] is None:
        target()
    else:
        thread = threading.Thread(target=target, name=f"airdask-{spec['key']}", daemon=True)
        thread.start()
        thread.join(spec["timeout"])
        if thread.is_alive():
            return (
                "timeout",
                f"timed out after {spec['timeout']:g}s (a Python callable's thread cannot be "
                "stopped; it was left to finish and its result is ignored)",
                None,
            )
    if "error" in result:
        return "exception", result["error"], None
    revoked = rt.revoked.get(spec["key"])
    if revoked is not None:
        return "killed", f"killed: {revoked} (the callable ran to its end)", None
    if "result_error" in result:
        return RESULT_KIND, result["result_error"], None
    if "kept" in result:
        rt.results[spec["key"]] = result["kept"]
    return "success", "returned", None


class _Run:
    """An attempt running in this process; a second call for its key waits for it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.outcome: Outcome | None = None
        self.waiters = 0  # calls waiting for it (a probe for tests)


def run_task(spec: TaskSpec) -> Outcome:
    """Run one attempt and return its outcome. Never raises for the task's own failures.

    One attempt runs at most once at a time per process: a call for a key that is running
    here already waits for that run and returns its outcome. (Dask should never execute a
    key twice at once on one worker; the chaos soak once saw it do so, around a worker's
    death, and an attempt's command must not run twice.)"""
    rt = _runtime()
    with rt.lock:
        running: _Run | None = rt.runs.get(spec["key"])
        if running is None:
            rt.runs[spec["key"]] = mine = _Run()
        else:
            running.waiters += 1
    if running is not None:
        running.done.wait()
        if running.outcome is None:  # that run raised, perhaps after its command ran
            raise RuntimeError(
                f"the first run of {spec['label']} in this process ended without an "
                "outcome; its command is not run again here"
            )
        return running.outcome
    try:
        mine.outcome = _run_once(spec, rt)
        return mine.outcome
    finally:
        with rt.lock:
            rt.runs.pop(spec["key"], None)
        mine.done.set()


def run_pushed(spec: TaskSpec) -> None:
    """:func:`run_task` for an executor that learns outcomes only from what is pushed (the
    Dask executor: ADR 0003): the Dask task's result is None, so the worker neither stores
    nor measures (``sizeof``) an outcome dict per attempt that nobody fetches."""
    run_task(spec)


def _run_once(spec: TaskSpec, rt: Any) -> Outcome:
    worker = _worker()
    started = time.time()
    if worker is not None:
        message = {
            "key": spec["key"],
            "worker": worker.address,
            "hostname": rt.hostname,
            "started_at": started,
        }
        rt.starts.add(spec["key"], worker, message)
    in_memory = spec["return_log"] and not spec["log_root"]
    path = MEMORY_LOG if in_memory else _log_file(spec, worker)
    memory = TailBuffer(spec["log_max_bytes"]) if in_memory else None
    with rt.lock:
        rt.log_paths[spec["key"]] = memory or path
        if spec["argv"] is not None:
            rt.unstarted.add(spec["key"])
    kind: OutcomeKind
    try:
        try:
            log = memory or open_log(path)
        except OSError as exc:  # not run: without its log, nobody could see what it did
            kind, reason, code = "error", f"cannot open the task log {path}: {exc}", None
        else:
            with log:
                kind, reason, code = _run_with_log(spec, rt, log)
    finally:
        rt.starts.discard(spec["key"])
        with rt.lock:
            rt.log_paths.pop(spec["key"], None)
            rt.unstarted.discard(spec["key"])
            rt.revoked.pop(spec["key"], None)
            kept = rt.results.pop(spec["key"], None)
    outcome = Outcome(
        key=spec["key"],
        state="success" if kind == "success" else "failed",
        kind=kind,
        reason=reason,
        exit_code=code,
        hostname=rt.hostname,
        worker=getattr(worker, "address", None),
        pid=os.getpid(),
        started_at=started,
        ended_at=time.time(),
        log_path=path,
        log=log_text(memory or path, spec["log_max_bytes"]) if spec["return_log"] else None,
        log_kept=False,
    )
    if kept is not None and kind == "success":
        _add_result(outcome, kept)
    if worker is not None:
        _push(worker, _pushable(rt, outcome))
    return outcome


def _add_result(outcome: Any, kept: tuple[str, bytes]) -> None:
    outcome["result_format"], outcome["result"] = kept


def _pushable(rt: Any, outcome: Outcome) -> Outcome:
    """The outcome to push: as it is, or with the last PUSH_LOG_MAX characters of its log,
    the whole tail kept here for :func:`take_kept_logs`."""
    text = outcome["log"]
    if text is None or len(text) <= PUSH_LOG_MAX:
        return outcome
    with rt.lock:
        rt.kept_logs[outcome["key"]] = text
        rt.kept_chars += len(text)
        while rt.kept_chars > KEPT_LOGS_MAX and rt.kept_logs:
            _, dropped = rt.kept_logs.popitem(last=False)
            rt.kept_chars -= len(dropped)
    short = dict(outcome)
    short["log"], short["log_kept"] = text[-PUSH_LOG_MAX:], True
    return short  # type: ignore[return-value]


def take_kept_logs(keys: list[str]) -> dict[str, str | None]:
    """The kept log tails of ``keys`` (None where there is none), forgotten here."""
    rt = _runtime()
    found: dict[str, str | None] = {}
    with rt.lock:
        for key in keys:
            text = rt.kept_logs.pop(key, None)
            if text is not None:
                rt.kept_chars -= len(text)
            found[key] = text
    return found


def _push(worker: Any, outcome: Outcome) -> None:
    """Send the outcome on FINISHED_TOPIC. Where airdask's worker plugin runs (it leaves a
    ``finished`` dict in the ``_airdask_shipped`` module), the plugin sends it from the
    worker's event loop when the task's result is stored: one loop wake-up fewer per
    attempt than sending it from this thread, and still ahead of Dask's own message."""
    hooked: Any = sys.modules.get(SHIPPED_MODULE)
    finished = getattr(hooked, "finished", None)
    if finished is not None and len(finished) < PLUGIN_QUEUE_MAX:
        finished[outcome["key"]] = dict(outcome)
        return
    # Nothing else carries it (the Dask task returns None, and no result is ever fetched):
    # if this fails, the keeper reports the attempt "outcome unknown" once Dask forgets it.
    with contextlib.suppress(Exception):
        worker.log_event(FINISHED_TOPIC, dict(outcome))


def _run_with_log(spec: TaskSpec, rt: Any, log: Any) -> RunResult:
    header = spec.get("header")
    if header:
        log.write(header + "\n")
    try:
        if spec["argv"] is not None:
            kind, reason, code = _run_argv(spec, rt, log)
        else:
            kind, reason, code = _call(spec, rt, log)
    except Exception as exc:  # a runner fault still yields an outcome
        traceback.print_exc(file=log)
        kind, reason, code = "error", f"runner error: {type(exc).__name__}: {exc}", None
    if kind != "success":
        log.write(f"[airdask] task failed: {reason}\n")
    return kind, reason, code


def kill_task(key: str, reason: str = "revoked") -> bool:
    """Revoke an attempt that runs in this process; False if none does.

    Its process group gets SIGTERM, then SIGKILL after a short grace period; an argv that
    has no process yet kills its own group as soon as it registers it (see _supervise). A
    Python callable cannot be killed: its outcome reports the revocation.
    """
    rt = _runtime()
    with rt.lock:
        if key not in rt.log_paths:  # not running here (or already over)
            return False
        rt.revoked[key] = reason
        proc = rt.procs.get(key)
    if proc is not None:
        killpg(proc.pid, signal.SIGTERM)
        timer = threading.Timer(KILL_GRACE_SECONDS, killpg, (proc.pid, signal.SIGKILL))
        timer.daemon = True
        timer.start()
    return True


def kill_tasks(keys: list[str], reason: str = "revoked") -> list[str]:
    """:func:`kill_task` for each of ``keys`` (one call per worker, however many attempts
    it runs); the keys that ran here."""
    return [key for key in keys if kill_task(key, reason)]


def kill_all(reason: str = "terminated") -> list[str]:
    """Kill every running argv of this process at once (SIGKILL); return the keys of those
    killed now. An argv attempt that has no process yet (before or just after its fork) is
    marked, so it kills its own group once it registers it (see _supervise); an attempt
    whose command already ended, or a callable, is left alone."""
    rt = _runtime()
    with rt.lock:
        procs = dict(rt.procs)
        for key in [*procs, *rt.unstarted]:
            rt.revoked[key] = reason
    for proc in procs.values():
        killpg(proc.pid, signal.SIGKILL)
    return list(procs)


def read_live_log(key: str) -> str | None:
    """The log so far of an attempt running in this process, or None if none is running."""
    rt = _runtime()
    with rt.lock:
        source = rt.log_paths.get(key)
    if source is None:
        return None
    return log_text(source, 16 * 1024 * 1024)


def running_keys() -> list[str]:
    """The keys of the attempts running in this process (a probe for tests and debugging)."""
    rt = _runtime()
    with rt.lock:
        return list(rt.log_paths)
