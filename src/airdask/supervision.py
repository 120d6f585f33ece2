"""The runner's process and output plumbing: the reaper that kills a dead host's process
groups, the start reporter, per-thread output routing and the in-memory log tail.

Shipped by value together with :mod:`airdask.runner` (both are registered with
``cloudpickle.register_pickle_by_value``), so, like it, stdlib only. State shared between
calls lives in the runner's runtime module, not here.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import io
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

STARTED_TOPIC = "airdask-task-started"
#: An attempt's start is reported only once it has run this long: a shorter attempt is
#: reported once, by its outcome (which carries its start time and worker as well).
START_REPORT_DELAY = 0.1
START_REPORT_TICK = 0.025

#: Set in every command's environment to the pid of the process that runs it: when that
#: process dies, its reaper also kills the groups of commands it had started but not yet
#: registered (forked in the last instant before the host was SIGKILLed).
HOST_ENV = "AIRDASK_RUNNER_HOST"

# The reaper waits on a pidfd of its host, which the kernel makes readable the instant the
# host exits: a rerun of the host's attempt elsewhere starts milliseconds after the host dies,
# and must not find the old command still running. It does not wait on its pipe: a reader
# blocked there is woken by every registration, and on a busy 2-core host those wake-ups
# cost a third of a fork+exec each. Written bytes stay in the pipe when the host dies, so
# draining it now and then loses nothing. Without pidfds (not Linux 5.3+) it polls instead.
# On death it kills the registered groups first and only then scans /proc for unregistered
# ones, which takes tens of milliseconds on a busy host.
REAPER_SOURCE = """
import os, select, signal, sys
fd = sys.stdin.fileno()
os.set_blocking(fd, False)
parent = int(sys.argv[2])  # not getppid(): a reaper slow to start may find its host dead
groups = set()
rest = b""
def drain():
    global rest
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        *lines, rest = (rest + chunk).split(b"\\n")
        for line in lines:
            if line[:1] == b"+":
                groups.add(int(line[1:]))
            elif line[:1] == b"-":
                groups.discard(int(line[1:]))
def kill(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
watch = select.poll()
try:
    watch.register(os.pidfd_open(parent), select.POLLIN)
    tick = 250
except (AttributeError, OSError):  # no pidfds: poll() without descriptors only sleeps
    tick = 50
while drain() and os.getppid() == parent and not watch.poll(tick):
    pass
drain()
for pgid in groups:
    kill(pgid)
mark = ("\\0%s=%d\\0" % (sys.argv[1], parent)).encode()
for name in os.listdir("/proc"):  # commands forked but not registered when the host died
    if name.isdigit():
        try:
            with open("/proc/%s/environ" % name, "rb") as env:
                if mark in b"\\0" + env.read():
                    kill(os.getpgid(int(name)))
        except OSError:
            pass
"""


class StartReporter:
    """Sends an attempt's started event when it is still running ``START_REPORT_DELAY``
    after it began. One daemon thread per process, woken at most once per
    ``START_REPORT_TICK`` while attempts are waiting (not once per attempt): the delay is
    constant, so new attempts never fall due before those already waiting."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.due: collections.deque[tuple[float, str]] = collections.deque()
        self.waiting: dict[str, tuple[Any, dict[str, Any]]] = {}
        self.thread: threading.Thread | None = None

    def add(self, key: str, worker: Any, message: dict[str, Any]) -> None:
        with self.cond:
            self.waiting[key] = (worker, message)
            self.due.append((time.monotonic() + START_REPORT_DELAY, key))
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._run, name="airdask-start-reporter", daemon=True
                )
                self.thread.start()
            elif len(self.due) == 1:
                self.cond.notify()

    def discard(self, key: str) -> None:
        with self.cond:
            self.waiting.pop(key, None)  # its due entry is skipped when it comes up

    def _run(self) -> None:
        while True:
            with self.cond:
                if not self.due:
                    self.cond.wait()
                    continue
                now = time.monotonic()
                while self.due and self.due[0][0] <= now:
                    entry = self.waiting.pop(self.due.popleft()[1], None)
                    if entry is not None:  # under the lock: so it precedes the outcome
                        with contextlib.suppress(Exception):
                            entry[0].log_event(STARTED_TOPIC, entry[1])
                if self.due:  # at most one wake-up per tick, however many attempts run
                    self.cond.wait(max(self.due[0][0] - now, START_REPORT_TICK))


class ThreadRoutedStream(io.TextIOBase):
    """sys.stdout/err stand-in: writes from a thread with a target go to that thread's log."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback
        self.local = threading.local()

    def write(self, text: str) -> int:
        target = getattr(self.local, "target", None)
        return int((target or self.fallback).write(text))

    def flush(self) -> None:
        target = getattr(self.local, "target", None)
        (target or self.fallback).flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fallback, name)


class Tee(io.TextIOBase):
    """Writes to the task log and to the original stream (DebugExecutor's terminal)."""

    def __init__(self, *streams: Any) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def route_output(rt: Any, target: Any, *, tee: bool) -> tuple[Any, Any]:
    with rt.lock:
        # Re-wrap if someone (a test runner, a notebook) replaced the streams since.
        if rt.stdout_proxy is None or sys.stdout is not rt.stdout_proxy:
            rt.stdout_proxy = ThreadRoutedStream(sys.stdout)
            sys.stdout = rt.stdout_proxy
        if rt.stderr_proxy is None or sys.stderr is not rt.stderr_proxy:
            rt.stderr_proxy = ThreadRoutedStream(sys.stderr)
            sys.stderr = rt.stderr_proxy
        proxies: tuple[Any, Any] = (rt.stdout_proxy, rt.stderr_proxy)
    for proxy in proxies:
        proxy.local.target = Tee(target, proxy.fallback) if tee else target
    return proxies


def ensure_reaper(rt: Any) -> None:
    """Start this process's reaper if it is not running. Called before a command starts, so
    that registering the command is a single pipe write, not an interpreter start-up during
    which the command would run unregistered."""
    with rt.lock:
        if rt.reaper is None or rt.reaper.poll() is not None:
            rt.reaper = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", REAPER_SOURCE, HOST_ENV, str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )


def reaper_send(rt: Any, line: str) -> None:
    # No liveness check per line (a waitpid each): a dead reaper fails the write instead.
    with rt.lock:
        for _ in range(2):
            if rt.reaper is None:
                ensure_reaper(rt)
            try:
                rt.reaper.stdin.write(line.encode() + b"\n")
                rt.reaper.stdin.flush()
                return
            except OSError:
                rt.reaper = None


def killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def read_tail(path: str, max_bytes: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > max_bytes:
        text = f"[airdask] log truncated to its last {max_bytes} bytes\n" + text
    return text


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


class TailBuffer(io.TextIOBase):
    """A scratch log in memory (a callable's output, or a command's through a pipe): no
    file to create, read back and delete for each attempt. Only the tail the outcome
    returns (``limit`` characters) is kept."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.dropped = False
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            self.parts.append(text)
            self.size += len(text)
            if self.size > 2 * self.limit:
                kept = "".join(self.parts)[-self.limit :]
                self.parts, self.size, self.dropped = [kept], len(kept), True
        return len(text)

    def tail(self, limit: int) -> str:
        with self.lock:
            text = "".join(self.parts)
        if self.dropped or len(text) > limit:
            kept = min(limit, self.limit) if self.dropped else limit
            return f"[airdask] log truncated to its last {kept} characters\n" + text[-kept:]
        return text


#: After the leader exited and its group was killed, how long its output may still take to
#: reach EOF (a child that left the group can hold the pipe open; it is not waited for).
PIPE_DRAIN_SECONDS = 0.5


class OutputPump:
    """A command's stdout and stderr, through a pipe into a :class:`TailBuffer`.

    For scratch logs (Dask, no log folder): no file to create, read back and delete per
    attempt. The runner's thread copies the output while it waits for the process, and
    learns of its exit from a pidfd (Linux), or by polling where there is none."""

    def __init__(self, sink: TailBuffer) -> None:
        self.sink = sink
        self.read_fd, self.write_fd = os.pipe()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._open = True
        self._eof = False

    def started(self) -> None:
        """The child holds the write end now; the parent's copy would keep EOF away."""
        if self.write_fd >= 0:
            fd, self.write_fd = self.write_fd, -1
            os.close(fd)

    def wait(self, proc: subprocess.Popen[bytes], timeout: float | None) -> int:
        """Copy output until ``proc`` exits; its exit code. ``TimeoutExpired`` after
        ``timeout`` seconds (the process is left running: the caller kills it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        poller = select.poll()
        poller.register(self.read_fd, select.POLLIN)
        pidfd = -1
        with contextlib.suppress(AttributeError, OSError):  # no pidfd: poll the exit
            pidfd = os.pidfd_open(proc.pid)
            poller.register(pidfd, select.POLLIN)
        try:
            while True:
                code = proc.poll()
                if code is not None:
                    return code
                wait = None if pidfd >= 0 else 0.05
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise subprocess.TimeoutExpired(proc.args, timeout or 0.0)
                    wait = left if wait is None else min(wait, left)
                for fd, _ in poller.poll(None if wait is None else wait * 1000):
                    if fd == self.read_fd and not self._read():
                        self._eof = True
                        poller.unregister(self.read_fd)
        finally:
            if pidfd >= 0:
                os.close(pidfd)

    def drain(self) -> None:
        """Read what is left (the group is dead by now), then close the pipe."""
        if not self._open or self._eof:  # all read already (the usual case)
            self.close()
            return
        deadline = time.monotonic() + PIPE_DRAIN_SECONDS
        poller = select.poll()
        poller.register(self.read_fd, select.POLLIN)
        while (left := deadline - time.monotonic()) > 0:
            if not poller.poll(left * 1000) or not self._read():
                break
        self.close()

    def close(self) -> None:
        """Close both ends (whichever are still open); safe to call again."""
        self.started()
        if self._open:
            self._open = False
            os.close(self.read_fd)
            self._flush_decoder()

    def _read(self) -> bool:
        data = os.read(self.read_fd, 65536)
        if data:
            self.sink.write(self._decoder.decode(data))
        return bool(data)

    def _flush_decoder(self) -> None:
        rest = self._decoder.decode(b"", final=True)
        if rest:
            self.sink.write(rest)


def log_text(source: str | TailBuffer, limit: int) -> str:
    # Not isinstance(TailBuffer): functions shipped by value each carry their own copy of
    # this module, so the buffer an attempt made is of another copy's class than the one
    # read_live_log sees.
    return read_tail(source, limit) if isinstance(source, str) else source.tail(limit)


def open_log(path: str) -> Any:
    try:
        return open(path, "a", buffering=1, encoding="utf-8", errors="replace")
    except FileNotFoundError:  # first attempt in this folder
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return open(path, "a", buffering=1, encoding="utf-8", errors="replace")
