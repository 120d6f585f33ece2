"""A LocalExecutor worker process: ``python -m airdask.executors.local_worker FD ONCE PARENT``.

Started as a plain interpreter (not through multiprocessing) so the scheduler's ``__main__``
is never re-imported in a worker. Reads specs from the connection on FD, answers outcomes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from airdask import runner

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """SIGTERM this worker when its parent (pid ``parent``) goes: the SIGTERM handler kills
    its commands. A parent that died before this line (a scheduler SIGKILLed while this
    interpreter started) sends no signal, and the attempt it already sent would run, and
    end, beside its retry: so the worker leaves at once if it is no longer its child."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        _on_sigterm(signal.SIGTERM, None)


def _on_sigterm(signum: int, frame: Any) -> None:
    runner.kill_all("terminated")
    os._exit(128 + signum)


def serve(conn: Connection, *, once: bool) -> None:
    while True:
        try:
            spec = conn.recv()
        except (EOFError, OSError):
            return
        if spec is None:
            return
        conn.send(runner.run_task(spec))
        if once:
            return


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)  # first: the parent may die at any moment
    _die_with_parent(int(argv[2]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the scheduler's to handle
    serve(Connection(int(argv[0])), once=argv[1] == "1")


if __name__ == "__main__":
    main(sys.argv[1:])
