"""What a Dask worker runs for one Airflow workload (shipped as a file: stdlib at the top).

``python airdask_execute_workload.py --server URL --json-path FILE`` does what Airflow's
``python -m airflow.sdk.execution_time.execute_workload --json-path FILE`` does (the same
logging set-up, then ``BaseExecutor.run_workload``), and in addition:

* takes the Execution API URL from the scheduler's configuration (``--server``), so the
  workers need no ``[core] execution_api_server_url`` of their own;
* exits with a code that says what happened (below) instead of 0 for any task outcome, so the
  executor can tell a failed task from a duplicate run refused by the API server (409), an
  expired token, an unreachable API server or a worker without Airflow's task SDK;
* hands the workload to the worker's pre-imported fork server when there is one (see
  :mod:`airdask.airflow.forkserver`), which saves the seconds a fresh interpreter spends on
  importing Airflow; otherwise it runs the workload itself.

This file is copied to the workers by the runner (it is one of the attempt's private files),
so it must not import airdask: the workers need Airflow, not airdask.
"""

from __future__ import annotations

import os
import sys

# Each task starts this file in a fresh interpreter only to hand its workload to the fork
# server: that path imports os, sys, _socket and array alone (argparse, json, socket,
# typing and traceback cost it 50 ms of CPU per task here). Type names are for mypy only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

#: Exit codes, read by the executor (airdask.airflow.outcomes).
EXIT_SUCCESS = 0
EXIT_TASK_FAILED = 1  # the task ran and failed; its supervisor told the API server
EXIT_BAD_WORKLOAD = 64  # the workload file could not be read or decoded
EXIT_API_UNREACHABLE = 69  # the Execution API could not be reached
EXIT_SUPERVISOR_ERROR = 70  # the supervisor raised (the log says what)
EXIT_NO_TASK_SDK = 71  # Airflow's task SDK cannot be imported on this worker
EXIT_ALREADY_RUNNING = 75  # the API server refused the start: the task runs elsewhere (409)
EXIT_TOKEN_REFUSED = 77  # the API server refused the workload's token (expired or wrong key)

#: Environment variable through which a Dask worker names its fork server's socket.
FORKSERVER_ENV = "AIRDASK_AIRFLOW_FORKSERVER"
#: A line starting with this is the reason the executor reports with the exit code.
REASON_PREFIX = "airdask-reason: "


def say(reason: str) -> None:
    print(REASON_PREFIX + reason.replace("\n", " "), file=sys.stderr, flush=True)


def load_workload(path: str) -> object:
    from airflow.executors import workloads
    from pydantic import TypeAdapter

    with open(path, encoding="utf-8") as fh:
        return TypeAdapter(workloads.All).validate_json(fh.read())


def classify(exc: BaseException, server: str) -> int:
    """The exit code (and reason line) for an exception raised by the supervisor."""
    name = type(exc).__name__
    if name == "TaskAlreadyRunningError":
        say(f"the API server says the task is already running elsewhere: {exc}")
        return EXIT_ALREADY_RUNNING
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        say(
            f"the API server refused the workload's token (HTTP {status}): it expired while "
            "the task waited in Dask (longer than [scheduler] task_queued_timeout), or the "
            "scheduler and the API server do not share [api_auth] jwt_secret"
        )
        return EXIT_TOKEN_REFUSED
    if name in ("ConnectError", "ConnectTimeout") or isinstance(exc, ConnectionError):
        say(f"cannot reach Airflow's Execution API at {server} from this worker: {exc}")
        return EXIT_API_UNREACHABLE
    say(f"the task's supervisor failed: {name}: {exc}")
    return EXIT_SUPERVISOR_ERROR


def wake_supervisor_on_child_exit() -> bool:
    """Make Airflow's supervisor, in this process, notice its task process's end at once.

    The supervisor waits in ``select()`` on its task's sockets and, between two waits, asks
    whether the process exited. The task closes its sockets just before it exits, so the
    supervisor often sees every socket closed while the process still runs, and then waits
    in a ``select()`` with nothing to wait for until its heartbeat interval is over: measured
    here, 36 of 50 tasks ended 1.0 s late (5 s with Airflow's default interval). This
    installs a SIGCHLD handler: when the task process exits, it adds an already readable
    socket to the supervisor's selector (found on the interrupted call stack), so the wait
    ends and the supervisor collects the exit code. Where the supervisor is not as expected
    (another Airflow) the handler does nothing and the interval still bounds the delay.
    Returns whether the handler was installed (only from the main thread).
    """
    import contextlib
    import selectors
    import signal
    import socket
    import threading
    from types import FrameType

    if threading.current_thread() is not threading.main_thread():
        return False
    owner = os.getpid()

    def woken(sock: socket.socket) -> bool:
        return False  # read nothing more: the supervisor closes the socket

    def on_child_exit(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:  # inherited by a child that did not reset it
            return
        while frame is not None:
            found = frame.f_locals.get("self")
            selector = getattr(found, "selector", None)
            if isinstance(selector, selectors.BaseSelector) and hasattr(found, "_open_sockets"):
                ready, other = socket.socketpair()
                other.close()  # end of file: readable at once
                try:
                    selector.register(ready, selectors.EVENT_READ, (woken, lambda _: None))
                except Exception:  # the supervisor is done with its selector
                    ready.close()
                return
            frame = frame.f_back

    def in_child() -> None:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    os.register_at_fork(after_in_child=in_child)
    signal.signal(signal.SIGCHLD, on_child_exit)
    return True


def run_workload(path: str, server: str) -> int:
    """Run one workload in this process (its main thread), as execute_workload does."""
    try:
        from airflow.executors.base_executor import BaseExecutor
        from airflow.sdk.log import configure_logging
        from airflow.settings import dispose_orm
    except ImportError as exc:
        say(
            f"Apache Airflow's task SDK cannot be imported by {sys.executable} on this Dask "
            f"worker ({exc}); install apache-airflow at the scheduler's version there, or set "
            "[dask] worker_python to an interpreter that has it"
        )
        return EXIT_NO_TASK_SDK
    try:
        workload = load_workload(path)
    except Exception as exc:
        say(f"cannot read the workload {path}: {type(exc).__name__}: {exc}")
        return EXIT_BAD_WORKLOAD
    dispose_orm(do_log=False)
    configure_logging(output=sys.stdout.buffer, json_output=True)
    wake_supervisor_on_child_exit()
    try:
        code = BaseExecutor.run_workload(workload, server=server)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        return classify(exc, server)
    return EXIT_SUCCESS if code == 0 else EXIT_TASK_FAILED


def via_forkserver(address: str, path: str, server: str) -> int | None:
    """Hand the workload to the worker's fork server; None if there is none to talk to.

    The request is ``path NUL server`` with this process's stdout and stderr attached; the
    server answers ``pid N`` once it forked the workload's leader and ``exit N`` when that
    ended. The connection stays open while the workload runs: if this process dies (killed
    on revoke or timeout, or with its Dask worker), the fork server kills the workload's
    process group, so the runner's supervision of this process covers the fork too.
    """
    import _socket
    import array

    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except OSError:
        return None
    lines: list[bytes] = []
    try:
        sock.connect(address)
        fds = array.array("i", [sys.stdout.fileno(), sys.stderr.fileno()])
        message = path.encode("utf-8", "surrogateescape") + b"\0" + server.encode()
        sock.sendmsg([message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        rest = b""
        while len(lines) < 2:
            chunk = sock.recv(4096)
            if not chunk:
                break
            *done, rest = (rest + chunk).split(b"\n")
            lines += done
    except OSError:
        pass
    finally:
        sock.close()
    if not lines:  # it never forked the workload: run it here instead
        return None
    if len(lines) < 2 or not lines[1].startswith(b"exit "):
        say("the worker's fork server went away while the task ran (it was killed with it)")
        return EXIT_SUPERVISOR_ERROR
    return int(lines[1][5:])


def parse_request(message: bytes) -> dict[str, str]:
    """The fork server's side of :func:`via_forkserver`'s request."""
    parts = message.split(b"\0")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"not 'path NUL server': {message[:200]!r}")
    return {"path": parts[0].decode("utf-8", "surrogateescape"), "server": parts[1].decode()}


#: Imported by the fork server before it forks, so that workloads need not import them.
PRELOAD = (
    "airflow.executors.base_executor",
    "airflow.executors.workloads",
    "airflow.sdk.execution_time.supervisor",
    "airflow.sdk.execution_time.task_runner",
    "airflow.sdk.log",
    "airflow.settings",
    "airflow.dag_processing.dagbag",
    "airflow.dag_processing.bundles.manager",
    "airflow.sdk.plugins_manager",
    "airflow.sdk.serde",
    "airflow.sdk.definitions.mappedoperator",
    "airflow.sdk.execution_time.timeout",
    "jinja2",
    "pydantic",
)


def warm() -> None:
    """Do, once in the fork server, the work every workload would repeat that Airflow
    caches per process: the API client's TLS context (loading the CA bundle took 0.16 s of
    CPU per task here; Airflow keeps it in an lru_cache, which the forks inherit)."""
    try:
        from airflow.sdk.api import client

        client.Client._get_ssl_context_cached(client.API_SSL_CA_FILE_PATH, client.API_SSL_CERT_PATH)
    except Exception as exc:  # another Airflow: the workloads build it themselves
        print(f"fork server: cannot warm the API client: {exc}", file=sys.stderr, flush=True)


#: Seconds a stopped workload gets to run its task's on_kill before everything is killed.
KILL_GRACE_SECONDS = 2.0
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    import contextlib
    import ctypes

    # Not Linux: no subreaper, but the process-group kill still applies.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _has_children() -> bool:
    """Reap the children that ended; whether any is left (saves two scans of /proc per task,
    6 ms each here, in the usual case where the workload left nothing behind)."""
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return True
        except ChildProcessError:
            return False


def _kill_descendants() -> None:
    """SIGKILL everything below this process (a subreaper, so that includes processes that
    left its session, as BashOperator's shell does) and reap it, until nothing is left."""
    import contextlib
    import signal
    import time

    for _ in range(100):
        if not _has_children():  # a subreaper without children has no descendants at all
            return
        left = _descendants(os.getpid())
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if not left:
            return
        time.sleep(0.02)


class _Stop(Exception):
    pass


def _exit_with(body: Callable[[], int]) -> NoReturn:
    """End a forked child with ``body()``'s exit code, never returning into the parent's
    code (a failure is printed to the attempt's log and exits EXIT_SUPERVISOR_ERROR)."""
    code = EXIT_SUPERVISOR_ERROR
    try:
        code = body()
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def lead(path: str, server: str) -> int:
    """One workload's leader, forked by the fork server: a new session, and the subreaper
    of everything the workload starts. The workload runs in a child; on SIGTERM (the fork
    server's, or its own death's) the workload gets SIGTERM (its supervisor forwards it,
    the task's on_kill runs) and ``KILL_GRACE_SECONDS``; then, and whenever the workload
    ends, whatever is left below the leader is killed."""
    import contextlib
    import signal
    import time

    os.setsid()
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    def stop(*_: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Stop

    # SIGTERM waits until the try below. Handled during the fork, its _Stop would be raised
    # inside an at-fork callback (logging's _releaseLock), where Python swallows it; the
    # leader then ignored SIGTERM and waited for its workload for ever (seen in CI).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    signal.signal(signal.SIGTERM, stop)
    workload = os.fork()
    if workload == 0:

        def run() -> int:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            return run_workload(path, server)

        _exit_with(run)
    code = EXIT_SUPERVISOR_ERROR
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        while True:
            pid, status = os.waitpid(-1, 0)
            if pid == workload:
                code = os.waitstatus_to_exitcode(status)
                break
    except _Stop:
        with contextlib.suppress(OSError):
            os.kill(workload, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        while time.monotonic() < deadline:
            try:
                if os.waitpid(workload, os.WNOHANG)[0]:
                    break
            except ChildProcessError:
                break
            time.sleep(0.05)
        code = 128 + signal.SIGTERM
    except ChildProcessError:
        pass
    _kill_descendants()
    return code


def _become_leader(fds: list[int], inherited: list[Any], request: dict[str, str]) -> int:
    """In the fork server's child: take the client's output, drop the server's sockets,
    lead the workload."""
    import signal

    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for sock in inherited:
        sock.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.environ["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = request["server"]
    return lead(request["path"], request["server"])


def serve(address: str, preload: list[str]) -> int:  # noqa: C901 (one poll loop: its cases read best side by side)
    """The fork server: one per Dask worker, single-threaded, Airflow pre-imported.

    Each connection is one workload: the client sends the workload's path, the Execution
    API URL and its stdout/stderr descriptors; the server forks a leader (:func:`lead`)
    and sends back its exit code. It stops a leader (SIGTERM) when its client goes away
    (the runner killed the client on revoke or timeout, or its Dask worker died), and every
    leader when its own stdin closes (its worker is gone); a ``drain`` line on stdin makes
    it take no new workloads and exit once those running are done.
    """
    import contextlib
    import gc
    import importlib
    import select
    import signal
    import socket

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(address):
        os.unlink(address)
    listener.bind(address)
    os.chmod(address, 0o600)
    listener.listen(64)  # clients wait in the backlog while the imports below run
    for name in [*PRELOAD, *preload]:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing module only costs the workloads its import
            print(f"fork server: cannot preload {name}: {exc}", file=sys.stderr, flush=True)
    warm()
    # What was imported stays out of the forks' garbage collections: each collection would
    # otherwise walk (and write to, so copy) every object inherited from this process.
    gc.collect()
    gc.freeze()
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    poller.register(sys.stdin.fileno(), select.POLLIN)
    leaders: dict[int, tuple[socket.socket | None, int]] = {}  # pidfd -> (client, pid)
    by_client: dict[int, int] = {}  # client fd -> pidfd

    def drop_client(pidfd: int) -> None:
        conn, pid = leaders[pidfd]
        if conn is not None:
            by_client.pop(conn.fileno(), None)
            poller.unregister(conn.fileno())
            conn.close()
            leaders[pidfd] = (None, pid)

    def stop(pidfd: int) -> None:
        drop_client(pidfd)
        with contextlib.suppress(OSError):
            os.kill(leaders[pidfd][1], signal.SIGTERM)

    def reap(pidfd: int) -> None:
        conn, pid = leaders.pop(pidfd)
        _, status = os.waitpid(pid, 0)
        if conn is not None:
            try:
                code = os.waitstatus_to_exitcode(status)
                conn.sendall(b"exit %d\n" % code)
            except OSError:
                pass
            leaders[pidfd] = (conn, pid)
            drop_client(pidfd)
            leaders.pop(pidfd)
        poller.unregister(pidfd)
        os.close(pidfd)

    draining = False
    while not (draining and not leaders):
        for fd, _ in poller.poll():
            if fd == sys.stdin.fileno():
                data = os.read(fd, 4096)
                if data and b"drain" in data and not draining:
                    # Replaced (a new executor registered the plugin again): take no new
                    # workloads, let those running finish, then exit.
                    draining = True
                    poller.unregister(listener)
                    listener.close()
                    os.unlink(address)
                if data:
                    continue
                for pidfd in list(leaders):  # the worker is gone: so are its workloads
                    stop(pidfd)
                for pidfd in list(leaders):
                    reap(pidfd)
                return 0
            if fd == listener.fileno() and not draining:
                conn, _ = listener.accept()
                fds: list[int] = []
                try:  # a client that sends nothing sensible is dropped, the server goes on
                    conn.settimeout(10)
                    message, fds, _, _ = socket.recv_fds(conn, 65536, 2)
                    request = parse_request(message)
                    if len(fds) != 2:
                        raise ValueError(f"expected 2 descriptors, got {len(fds)}")
                except Exception as exc:
                    print(f"fork server: bad request: {exc}", file=sys.stderr, flush=True)
                    for passed in fds:
                        os.close(passed)
                    conn.close()
                    continue
                conn.settimeout(None)
                pid = os.fork()
                if pid == 0:
                    _exit_with(lambda: _become_leader(fds, [listener, conn], request))  # noqa: B023
                for passed in fds:
                    os.close(passed)
                with contextlib.suppress(OSError):
                    conn.sendall(b"pid %d\n" % pid)
                pidfd = os.pidfd_open(pid)
                leaders[pidfd] = (conn, pid)
                by_client[conn.fileno()] = pidfd
                poller.register(conn.fileno(), select.POLLIN | select.POLLHUP)
                poller.register(pidfd, select.POLLIN)
            elif fd in leaders:
                reap(fd)
            elif fd in by_client:  # a client said something, or went away: it is gone
                stop(by_client[fd])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # The executor's own command line, parsed without argparse (see the imports).
    executors = len(args) == 4 or (len(args) == 5 and args[4] == "--no-forkserver")
    if executors and args[0] == "--server" and args[2] == "--json-path":
        return run(args[3], args[1], forkserver=len(args) == 4)
    import argparse

    parser = argparse.ArgumentParser(description="Run one Airflow workload on a Dask worker.")
    parser.add_argument("--serve", metavar="SOCKET", help="run as the worker's fork server")
    parser.add_argument("--preload", default="", help="more modules the fork server imports")
    parser.add_argument("--server", help="Airflow's Execution API URL")
    parser.add_argument("--json-path", help="the workload file (mode 0600)")
    parser.add_argument(
        "--no-forkserver", action="store_true", help="run here even if the worker has a fork server"
    )
    options = parser.parse_args(args)
    if options.serve:
        return serve(options.serve, [m.strip() for m in options.preload.split(",") if m.strip()])
    if not options.server or not options.json_path:
        parser.error("--server and --json-path are required")
    return run(options.json_path, options.server, forkserver=not options.no_forkserver)


def run(path: str, server: str, *, forkserver: bool) -> int:
    """Run the workload at ``path``: through the worker's fork server if it has one (and
    ``forkserver``), else here."""
    os.environ["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = server
    address = os.environ.get(FORKSERVER_ENV) if forkserver else None
    if address:
        code = via_forkserver(address, path, server)
        if code is not None:
            return code
    return run_workload(path, server)


if __name__ == "__main__":
    sys.exit(main())
