"""A real cluster from ``cluster/local/start-cluster.sh`` for "attach to an existing cluster"
tests: random ports, a state dir under the test's tmp folder, torn down by
``stop-cluster.sh``.

Use the ``script_cluster`` fixture (2 workers, plain TCP; the workers' resources come from
the pools table of the test's AIRDASK_HOME, so create pools before requesting it), or
:func:`local_cluster` for other shapes (``tls=True``, more workers, extra resources).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
START = REPO / "cluster" / "local" / "start-cluster.sh"
STOP = REPO / "cluster" / "local" / "stop-cluster.sh"
MAKE_CERTS = REPO / "cluster" / "tls" / "make-certs.sh"
BIN = Path(sys.executable).parent


def script_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the scripts: this venv's ``dask`` and ``airdask`` first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


@dataclass
class ScriptCluster:
    state_dir: Path
    address: str
    dashboard: str
    workers: int
    #: ``AIRDASK__DASK__*`` settings a client needs (address, and TLS files with ``tls``).
    env: dict[str, str] = field(default_factory=dict)
    tls_dir: Path | None = None

    def security(self) -> Any:
        """A client ``distributed.Security`` (None for plain TCP)."""
        if self.tls_dir is None:
            return None
        from distributed import Security

        return Security(
            tls_ca_file=str(self.tls_dir / "ca.pem"),
            tls_client_cert=str(self.tls_dir / "client.pem"),
            tls_client_key=str(self.tls_dir / "client-key.pem"),
            require_encryption=True,
        )

    def pids(self) -> dict[str, int]:
        return {p.stem: int(p.read_text()) for p in (self.state_dir / "pids").glob("*.pid")}


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        out[name] = value
    return out


def make_certs(folder: Path) -> Path:
    subprocess.run([str(MAKE_CERTS), str(folder)], check=True, capture_output=True, timeout=60)
    return folder


@contextmanager
def local_cluster(
    folder: Path,
    *,
    workers: int = 2,
    tls: bool = False,
    resources: str | None = None,
    env: dict[str, str] | None = None,
    timeout: int = 90,
) -> Iterator[ScriptCluster]:
    """Start a cluster with the scripts (random ports) and stop it afterwards."""
    state = folder / "cluster-state"
    argv = [str(START), "--state-dir", str(state), "--workers", str(workers), "--port", "0"]
    argv += ["--dashboard-address", "127.0.0.1:0", "--timeout", str(timeout)]
    tls_dir = make_certs(folder / "tls") if tls else None
    if tls_dir is not None:
        argv += ["--tls", str(tls_dir)]
    if resources:
        argv += ["--resources", resources]
    environ = script_env(env)
    started = subprocess.run(
        argv, env=environ, capture_output=True, text=True, timeout=timeout + 30
    )
    try:
        if started.returncode != 0:
            raise AssertionError(
                f"start-cluster.sh failed ({started.returncode}):\n"
                f"{started.stdout}\n{started.stderr}"
            )
        values = read_env_file(state / "cluster.env")
        cluster_env = {k: v for k, v in values.items() if k.startswith("AIRDASK__")}
        yield ScriptCluster(
            state_dir=state,
            address=values["AIRDASK__DASK__CLUSTER_ADDRESS"],
            dashboard=values["AIRDASK_CLUSTER_DASHBOARD"],
            workers=int(values["AIRDASK_CLUSTER_WORKERS"]),
            env=cluster_env,
            tls_dir=tls_dir,
        )
    finally:
        subprocess.run(
            [str(STOP), "--state-dir", str(state), "--quiet", "--timeout", "20"],
            env=environ,
            check=False,
            timeout=120,
        )


@pytest.fixture
def script_cluster(home: Path, tmp_path: Path) -> Iterator[ScriptCluster]:
    """Two workers on random ports, started and stopped by the cluster/local scripts."""
    with local_cluster(tmp_path) as cluster:
        yield cluster
