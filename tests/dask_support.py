"""Real Dask clusters for the DaskExecutor tests: ``dask scheduler``/``dask worker``
subprocesses on random ports (``--scheduler-file``), and embedded LocalClusters."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from airdask.config import Config
from airdask.executors import BaseExecutor
from proc_support import wait_for

BIN = Path(sys.executable).parent

#: Runs `dask worker` in a process where `import airdask` fails (no nanny, so no child).
_BLOCKED_WORKER = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "airdask" or name.startswith("airdask."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked for this test)")
        return None
sys.meta_path.insert(0, _Block())
from distributed.cli.dask_worker import main
sys.argv = ["dask-worker", *sys.argv[1:]]
main()
"""


@dataclass
class ExternalCluster:
    """A scheduler subprocess and its worker subprocesses."""

    folder: Path
    address: str = ""
    scheduler: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    tls: dict[str, str] = field(default_factory=dict)  # ca/cert/key for servers

    def _tls_args(self) -> list[str]:
        if not self.tls:
            return []
        return ["--tls-ca-file", self.tls["ca"], "--tls-cert", self.tls["cert"],
                "--tls-key", self.tls["key"]]  # fmt: skip

    def start_scheduler(
        self, *, allowed_failures: int = 1, port: int = 0, extra: Sequence[str] = ()
    ) -> str:
        sched_file = self.folder / f"scheduler-{len(self.workers)}-{os.getpid()}-{port}.json"
        sched_file.unlink(missing_ok=True)
        env = dict(os.environ)
        env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = str(allowed_failures)
        protocol = ["--protocol", "tls"] if self.tls else []
        self.scheduler = subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file),
             *protocol, *self._tls_args(), *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=self._log("scheduler"),
        )  # fmt: skip
        wait_for(sched_file.exists, timeout=30, what="dask scheduler to write its file")
        wait_for(lambda: bool(sched_file.read_text().strip()), timeout=10, what="scheduler file")
        self.address = json.loads(sched_file.read_text())["address"]
        return self.address

    def _log(self, name: str) -> int:
        path = self.folder / f"{name}.log"
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def start_worker(
        self,
        *,
        resources: str | None = None,
        nthreads: int = 2,
        nanny: bool = True,
        block_airdask: bool = False,
        extra: Sequence[str] = (),
    ) -> subprocess.Popen[bytes]:
        args = [self.address, "--nthreads", str(nthreads), "--host", "127.0.0.1",
                "--dashboard-address", "127.0.0.1:0", "--death-timeout", "20",
                *self._tls_args(), *extra]  # fmt: skip
        if resources:
            args += ["--resources", resources]
        env = dict(os.environ)
        if block_airdask:
            cmd = [sys.executable, "-c", _BLOCKED_WORKER, *args, "--no-nanny"]
        else:
            cmd = [str(BIN / "dask"), "worker", *args, "--nanny" if nanny else "--no-nanny"]
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log(f"worker{len(self.workers)}"),
            start_new_session=True,
        )
        self.workers.append(proc)
        return proc

    def kill_scheduler(self) -> None:
        if self.scheduler is not None and self.scheduler.poll() is None:
            self.scheduler.kill()
            self.scheduler.wait(10)

    def restart_scheduler(self, *, allowed_failures: int = 1, extra: Sequence[str] = ()) -> str:
        """SIGKILL the scheduler and start a new one on the same address. A ``dask worker``
        ends with its scheduler (nanny included): start new workers, as a supervisor would."""
        port = int(self.address.rsplit(":", 1)[1])
        self.kill_scheduler()
        return self.start_scheduler(allowed_failures=allowed_failures, port=port, extra=extra)

    def stop(self) -> None:
        for proc in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if self.scheduler is not None and self.scheduler.poll() is None:
            self.scheduler.terminate()
            try:
                self.scheduler.wait(15)
            except subprocess.TimeoutExpired:
                self.scheduler.kill()
                self.scheduler.wait(5)


@contextlib.contextmanager
def external_cluster(folder: Path, **kwargs: object) -> Iterator[ExternalCluster]:
    cluster = ExternalCluster(folder)
    try:
        cluster.start_scheduler(**kwargs)  # type: ignore[arg-type]
        yield cluster
    finally:
        cluster.stop()


@contextlib.contextmanager
def local_cluster(
    *, n_workers: int = 2, threads: int = 2, resources: dict[str, float] | None = None,
    allowed_failures: int = 1,
) -> Iterator[object]:  # fmt: skip
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}):
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads,
            processes=True,
            dashboard_address="127.0.0.1:0",
            host="127.0.0.1",
            resources=resources,
        )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def dask_contract_cluster() -> Iterator[object]:
    """One embedded LocalCluster per test module, for the executor contract suite."""
    with local_cluster(n_workers=2, threads=2) as cluster:
        yield cluster


def dask_factory(
    request: pytest.FixtureRequest, config: Config, parallelism: int | None
) -> BaseExecutor:
    from airdask.executors.dask import DaskExecutor

    cluster = request.getfixturevalue("dask_contract_cluster")
    return DaskExecutor(cluster.scheduler_address, config=config, parallelism=parallelism)


def local_dask_factory(
    request: pytest.FixtureRequest, config: Config, parallelism: int | None
) -> BaseExecutor:
    """LocalDaskExecutor with its Dask side on the shared cluster (contract tasks use the
    default queue, so they all go to Dask; the local side is covered by its own tests)."""
    from airdask.executors.local_dask import LocalDaskExecutor

    cluster = request.getfixturevalue("dask_contract_cluster")
    return LocalDaskExecutor(
        cluster_address=cluster.scheduler_address, config=config, parallelism=parallelism
    )


@contextlib.contextmanager
def preloaded_dashboard_client(*, threads_per_worker: int) -> Iterator[Client]:
    """A Client of a one-worker LocalCluster whose dashboard (random port) has the airdask
    page (scheduler preload)."""
    from airdask.dashboard import preload

    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"preload": [preload.PRELOAD]},
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def dashboard_root(client: Client) -> str:
    """``http://127.0.0.1:PORT`` of ``client``'s Dask dashboard."""
    return f"http://127.0.0.1:{client.scheduler_info()['services']['dashboard']}"
