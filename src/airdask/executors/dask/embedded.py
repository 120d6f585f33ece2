"""The embedded cluster: process workers on this machine, and its Dask scheduler in a process
of its own (ADR 0013).

A ``LocalCluster`` runs its Dask scheduler inside the process that made it. There, the Dask
scheduler's event loop and airdask's scheduler loop share one GIL, and a run of thousands
of no-op tasks keeps both busy: measured, each held the GIL about 40% of a 5,000-task run,
and the run was GIL-bound. :class:`SchedulerProcess` moves the Dask scheduler into a child
process, so the two loops run on two cores. ``[dask] scheduler_process = false`` keeps the
old way (it starts about a second sooner).

The child lives only as long as its parent: it holds the read end of a pipe whose only
writer is the parent, and stops its scheduler when the pipe reaches end-of-file, which a
SIGKILLed parent causes as surely as a closing one. It ignores SIGINT (a Ctrl-C in the
terminal reaches the whole process group, and the parent's graceful stop still needs the
Dask scheduler), and it writes nothing that the parent would have to drain: its address
goes out once on stdout, after which stdout points at the stderr it shares with the parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import dask.config
from distributed.core import Status
from distributed.deploy.spec import ProcessInterface

if TYPE_CHECKING:
    from airdask.config import Config

log = logging.getLogger(__name__)

#: The Dask scheduler gets this long to stop by itself once told to, then it is killed.
CLOSE_GRACE_SECONDS = 10.0
#: Most seconds a Dask scheduler may take to import and start listening.
START_TIMEOUT_SECONDS = 60.0
#: A string, not an import: importing the preload loads Bokeh and adds the airdask page.
DASHBOARD_PRELOAD = "airdask.dashboard.preload"
# The child's first statement: it may not find airdask on its default path (a notebook that
# extended sys.path, a checkout on PYTHONPATH), so it takes the parent's path first.
_BOOTSTRAP = (
    "import json, sys; spec = json.loads(sys.argv[1]); "
    "sys.path[:0] = [p for p in spec['path'] if p not in sys.path]; "
    "from airdask.executors.dask.embedded import serve; serve(spec)"
)


def embedded_cluster(config: Config, *, resources: Mapping[str, float] | None = None) -> Any:
    """A cluster of ``[dask] n_workers`` process workers, each offering ``resources`` (the
    pools table, read by the caller), and a Dask scheduler serving the airdask dashboard
    page: in a process of its own unless ``[dask] scheduler_process`` is false."""
    from distributed import LocalCluster, Nanny, SpecCluster
    from distributed.worker_memory import parse_memory_limit

    dashboard = config.dask.dashboard_address or None
    scheduler_options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "dashboard": dashboard is not None,
        "dashboard_address": dashboard,
        "allowed_failures": config.dask.allowed_failures,
        "preload": [DASHBOARD_PRELOAD] if dashboard else [],  # no dashboard: no page
    }
    if not config.dask.scheduler_process:
        return LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=config.dask.n_workers,
            threads_per_worker=config.dask.threads_per_worker,
            processes=True,
            dashboard_address=dashboard,
            resources=dict(resources) if resources else None,
            scheduler_kwargs={k: scheduler_options[k] for k in ("allowed_failures", "preload")},
        )
    worker = {
        "cls": Nanny,
        "options": {
            "host": "127.0.0.1",
            "nthreads": config.dask.threads_per_worker,
            "resources": dict(resources) if resources else None,
            "memory_limit": parse_memory_limit("auto", 1, config.dask.n_workers, logger=log),
            "dashboard": False,
            "dashboard_address": None,
            "silence_logs": logging.WARNING,
        },
    }
    return SpecCluster(  # type: ignore[no-untyped-call]
        scheduler={"cls": SchedulerProcess, "options": {"options": scheduler_options}},
        workers={i: worker for i in range(config.dask.n_workers)},
        worker=worker,
        silence_logs=logging.WARNING,
        name="airdask-embedded",
    )


class SchedulerProcess(ProcessInterface):
    """A ``distributed.Scheduler`` in a child process, for a ``SpecCluster`` (which calls
    ``start`` and ``close`` and reads ``address``; see ``distributed.deploy.spec``).

    :param options: keyword arguments of ``distributed.Scheduler`` (JSON values only).
    :param start_timeout: seconds the child may take to listen before start() fails.
    """

    def __init__(
        self, *, options: dict[str, Any], start_timeout: float = START_TIMEOUT_SECONDS
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.options = dict(options)
        self.start_timeout = start_timeout
        self.process: asyncio.subprocess.Process | None = None
        self._exit_watch: asyncio.Future[None] | None = None
        # The parent's Dask settings (dask.config.set in a test or a notebook) hold in the
        # child too, as they do in Dask's own spawned workers.
        self.env = dict(os.environ)
        self.env["DASK_INTERNAL_INHERIT_CONFIG"] = dask.config.serialize(dask.config.global_config)

    async def start(self) -> None:
        spec = json.dumps({"path": sys.path, "options": self.options})
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _BOOTSTRAP,
            spec,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self.env,
        )
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), self.start_timeout)
        except TimeoutError:
            await self._stop(grace=0.0)
            raise RuntimeError(
                f"the embedded Dask scheduler did not listen within {self.start_timeout:g} s"
            ) from None
        if not line:
            code = await self.process.wait()
            raise RuntimeError(
                f"the embedded Dask scheduler exited with code {code} before it listened "
                "(its error is above, on stderr)"
            )
        self.address = json.loads(line)["address"]
        log.debug("embedded Dask scheduler pid %d at %s", self.process.pid, self.address)
        await super().start()  # type: ignore[no-untyped-call]
        # Kept: the loop holds only a weak reference to a task.
        self._exit_watch = asyncio.ensure_future(self._watch_exit(self.process))

    async def _watch_exit(self, proc: asyncio.subprocess.Process) -> None:
        """Its death unasked-for (OOM killer, a signal) is a failure: the cluster's close
        then skips asking it to retire the workers, which could only time out."""
        code = await proc.wait()
        if self.process is proc:  # not stopped by close()
            log.error("the embedded Dask scheduler (pid %d) exited with code %d", proc.pid, code)
            self.status = Status.failed

    @property
    def exit_code(self) -> int | None:
        """The child's exit code once it has exited unasked-for; None while it runs."""
        return self.process.returncode if self.process is not None else None

    async def close(self) -> None:
        await self._stop(grace=CLOSE_GRACE_SECONDS)
        await super().close()  # type: ignore[no-untyped-call]

    async def _stop(self, *, grace: float) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.returncode is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()  # end-of-file: the child stops its scheduler and exits
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            log.warning(
                "the embedded Dask scheduler (pid %d) did not stop within %g s; killing it",
                proc.pid,
                grace,
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def scheduler_process_of(cluster: Any) -> SchedulerProcess | None:
    """``cluster``'s Dask scheduler if it runs in a process of its own (else None)."""
    scheduler = getattr(cluster, "scheduler", None)
    return scheduler if isinstance(scheduler, SchedulerProcess) else None


def serve(spec: dict[str, Any]) -> None:
    """The child's life: run a Dask scheduler with ``spec["options"]`` until the parent's
    pipe closes (or SIGTERM, or the scheduler closes itself)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed").setLevel(logging.WARNING)  # as LocalCluster's default
    asyncio.run(_serve(spec["options"]))


async def _serve(options: dict[str, Any]) -> None:
    from distributed import Scheduler

    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def finish(why: str) -> None:
        if not stop.done():
            stop.set_result(why)

    def parent_readable() -> None:
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            finish("the parent closed its pipe")

    os.set_blocking(0, False)
    loop.add_reader(0, parent_readable)
    loop.add_signal_handler(signal.SIGTERM, finish, "SIGTERM")
    async with Scheduler(**options) as scheduler:
        os.write(1, (json.dumps({"address": scheduler.address}) + "\n").encode())
        os.dup2(2, 1)  # nothing more goes to the parent's pipe: it is not read
        closed = asyncio.ensure_future(scheduler.finished())
        await asyncio.wait([stop, closed], return_when=asyncio.FIRST_COMPLETED)
