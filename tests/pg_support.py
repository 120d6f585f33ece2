"""A private PostgreSQL server for tests that stop, restart or kill it.

The shared server on 127.0.0.1:5432 serves every other test (and other suites running on
the machine); a test that restarts PostgreSQL mid-run gets a cluster of its own instead:
``initdb`` in a fresh folder, started on a free loopback port with trust auth, removed on
:meth:`PrivatePostgres.close`. PostgreSQL refuses to run as root, so when the tests run as
root the server runs as the ``postgres`` user (``runuser``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from conftest import skip_or_fail
from proc_support import wait_for


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivatePostgres:
    """A throwaway PostgreSQL cluster: :attr:`url` points at its ``postgres`` database."""

    def __init__(self) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            skip_or_fail("no PostgreSQL server binaries (apt-get install postgresql)")
        assert bin_dir is not None
        self.bin = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="airdask-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def _options(self) -> str:
        return f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off"

    def start(self) -> None:
        log = str(self.folder / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", self._options(), "-w", "start")
        wait_for(self.ready, timeout=30, what=f"private PostgreSQL on port {self.port}")

    def ready(self) -> bool:
        result = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
        )
        return result.returncode == 0

    def restart(self) -> None:
        """A fast restart (``-m fast``: open connections are cut, as in a failover)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-o", self._options(),
                  "-w", "restart")  # fmt: skip
        wait_for(self.ready, timeout=30, what="PostgreSQL to come back")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()
