"""A pre-imported fork server on every Dask worker, so that a workload does not pay for a
fresh interpreter importing Airflow (seconds of CPU per task).

:class:`ForkServerPlugin` is a Dask worker plugin: on each worker (present and future) it
writes the worker script into the worker's local directory and starts it as a fork server
(``--serve``, see :func:`airdask.airflow.worker_script.serve`), single-threaded, with
Airflow imported once. The worker's environment then names the server's socket, and the
worker script of each workload (still started by airdask's runner, in its own process
group) hands the workload to it instead of importing Airflow itself; where there is no
server (a worker that joined before the plugin, a server that died) it runs the workload
itself, in a fresh interpreter. This is LocalExecutor's and Edge3's model, behind Dask.

Supervision is kept: the server kills a workload when its script process dies (revoke,
timeout, or its worker's death, when the runner's reaper kills the script), and every
workload when its worker goes away (its stdin, a pipe from the worker, closes).

Shipped to the workers by value: they need Airflow, not airdask.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import uuid
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from airdask.airflow.worker_script import FORKSERVER_ENV

SCRIPT_NAME = "airdask_execute_workload.py"


PLUGIN_PREFIX = "airdask-airflow-forkserver-"


class ForkServerPlugin(WorkerPlugin):
    """Starts the worker's fork server. Named by a digest of what it runs: registering the
    same again (a restarted scheduler) is a no-op (``idempotent``), and the fork servers
    keep running, with the workloads they hold."""

    idempotent = True

    def __init__(self, script: str, *, python: str = "", preload: str = "") -> None:
        self.script = script
        self.python = python
        self.preload = preload
        digest = hashlib.sha256("\0".join((script, python, preload)).encode()).hexdigest()
        self.name = PLUGIN_PREFIX + digest[:16]
        self.proc: subprocess.Popen[bytes] | None = None

    def setup(self, worker: Any) -> None:
        folder = os.path.join(worker.local_directory, "airdask-airflow")
        os.makedirs(folder, mode=0o700, exist_ok=True)
        script = os.path.join(folder, SCRIPT_NAME)
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(self.script)
        address = os.path.join(folder, f"fs-{uuid.uuid4().hex[:8]}.sock")
        argv = [self.python or sys.executable, script, "--serve", address]
        if self.preload:
            argv += ["--preload", self.preload]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, start_new_session=True, close_fds=True
        )
        os.environ[FORKSERVER_ENV] = address

    def teardown(self, worker: Any) -> None:
        os.environ.pop(FORKSERVER_ENV, None)
        proc, self.proc = self.proc, None
        if proc is None:
            return
        # Replaced or removed, the worker lives on, and so do the workloads under way (a
        # scheduler restart re-registers the plugin, and adopts them): the server drains.
        # It keeps its stdin, so it still kills them should the worker die.
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.write(b"drain\n")
                proc.stdin.flush()
        # Kept where the replaced plugin object is not: a collected pipe would close.
        retired = getattr(worker, "_airdask_retired_forkservers", None)
        if retired is None:
            retired = []
            worker._airdask_retired_forkservers = retired
        retired.append(proc)


def _plugin_names(dask_scheduler: Any) -> list[str]:
    return [str(name) for name in dask_scheduler.worker_plugins]


def install(client: Any, script: str, *, python: str, preload: str) -> None:
    """Register the plugin on the cluster (every worker, and every worker that joins), and
    retire fork servers of other versions (they drain: their workloads run to the end)."""
    import cloudpickle

    from airdask.airflow import forkserver

    cloudpickle.register_pickle_by_value(forkserver)
    plugin = ForkServerPlugin(script, python=python, preload=preload)
    client.register_plugin(plugin)
    for name in client.run_on_scheduler(_plugin_names):
        if name.startswith(PLUGIN_PREFIX) and name != plugin.name:
            client.unregister_worker_plugin(name)
