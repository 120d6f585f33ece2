"""Real brokers and real ``airdask celery worker`` subprocesses for CeleryExecutor's tests.

Redis at 127.0.0.1:6379 and RabbitMQ at amqp://guest:guest@127.0.0.1:5672//: a missing one
skips locally and fails under CI=true. Each worker consumes a queue of its own (a fresh
name), and each Redis user here a database number of its own, so tests (and other suites on
the same servers) never see each other's messages.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import skip_or_fail

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
#: Redis database numbers: one per user in this suite (the contract workers, each fault test).
#: Under pytest-xdist the second process takes the seven below them, so two processes never
#: flush each other's broker (Redis has 16 databases: a third process would need more).
_XDIST_INDEX = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
assert _XDIST_INDEX < 2, "the Celery tests' Redis databases allow two pytest-xdist processes"
REDIS_DB = {
    name: db - 7 * _XDIST_INDEX
    for name, db in {"contract": 10, "contract-rabbitmq-results": 11, "faults": 12, "e2e": 13,
                     "bench": 14, "multi": 9, "multi-kills": 8}.items()
}  # fmt: skip


def redis_url(db: int) -> str:
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_celery() -> None:
    try:
        import celery  # noqa: F401
    except ImportError:
        skip_or_fail("celery is not installed (pip install 'airdask[celery]')")


def require_broker(kind: str) -> None:
    require_celery()
    if kind == "redis" and not _port_open(REDIS_HOST, REDIS_PORT):
        skip_or_fail(f"no Redis server at {REDIS_HOST}:{REDIS_PORT}")
    if kind == "rabbitmq" and not _port_open("127.0.0.1", 5672):
        skip_or_fail("no RabbitMQ server at 127.0.0.1:5672")


def flush_redis(db: int) -> None:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    try:
        client.flushdb()
    finally:
        client.close()


def broker_settings(kind: str, db: int, *, queue: str | None = None) -> dict[str, str]:
    """``[celery]`` options (as AIRDASK__CELERY__* names' keys) for a broker kind."""
    queue = queue or f"airdask-test-{uuid.uuid4().hex[:10]}"
    broker = redis_url(db) if kind == "redis" else RABBITMQ_URL
    return {
        "broker_url": broker,
        "result_backend": redis_url(db),
        "default_queue": queue,
        "allow_pickle": "true",
        "operation_timeout": "3",
    }


def celery_env(options: Mapping[str, str], home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRDASK__")}
    env["AIRDASK_HOME"] = str(home)
    for key, value in options.items():
        env[f"AIRDASK__CELERY__{key.upper()}"] = value
    env.update(extra)
    return env


@dataclass
class Worker:
    """A running ``airdask celery worker`` subprocess (its own session: killed as a group)."""

    process: subprocess.Popen[bytes]
    hostname: str
    options: dict[str, str]
    log: Path
    queues: list[str] = field(default_factory=list)

    @property
    def overrides(self) -> dict[tuple[str, str], Any]:
        return {("celery", k): v for k, v in self.options.items()}

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def pool_pids(self) -> list[int]:
        """The pool processes' pids (children of the worker's main process)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        with contextlib.suppress(OSError):
            return [int(p) for p in path.read_text().split()]
        return []

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGQUIT)  # cold: no wait for tasks
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


def start_worker(
    options: Mapping[str, str],
    home: Path,
    *,
    concurrency: int = 2,
    queues: list[str] | None = None,
    env_extra: Mapping[str, str] | None = None,
    name: str | None = None,
    wait: bool = True,
) -> Worker:
    """Start ``airdask celery worker`` and (``wait``) return once it answers a ping."""
    hostname = name or f"test-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    log = home / f"worker-{hostname.partition('@')[0]}.log"
    home.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "airdask.cli", "celery", "worker", "-c", str(concurrency),
            "-n", hostname, "--without-mingle"]  # fmt: skip
    if queues:
        argv += ["-q", ",".join(queues)]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv,
            env=celery_env(options, home, **dict(env_extra or {})),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    worker = Worker(process, hostname, dict(options), log, list(queues or []))
    if wait:
        try:
            wait_ready(worker)
        except BaseException:
            worker.stop()
            raise
    return worker


def wait_ready(worker: Worker, timeout: float = 60) -> None:
    """Until the worker answers a ping over the broker."""
    from airdask.executors.celery.app import make_app
    from airdask.executors.celery.settings import celery_settings

    app = make_app(celery_settings(_config(worker.options)))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if worker.process.poll() is not None:
                raise AssertionError(
                    f"celery worker exited ({worker.process.returncode}):\n{worker.output()}"
                )
            with contextlib.suppress(Exception):
                if app.control.ping(destination=[worker.hostname], timeout=0.5):
                    return
        raise AssertionError(f"celery worker not ready in {timeout}s:\n{worker.output()}")
    finally:
        app.close()


def _config(options: Mapping[str, str]) -> Any:
    from airdask.config import load_config

    env = {f"AIRDASK__CELERY__{k.upper()}": v for k, v in options.items()}
    env["AIRDASK_HOME"] = os.environ.get("AIRDASK_HOME", "/nonexistent-airdask-home")
    return load_config(env)


def _session_worker(
    kind: str, tmp_path_factory: pytest.TempPathFactory, db: int
) -> Iterator[Worker]:
    require_broker(kind)
    require_broker("redis")  # the result backend
    flush_redis(db)
    options = broker_settings(kind, db)
    worker = start_worker(options, tmp_path_factory.mktemp(f"celery-{kind}"), concurrency=4)
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="session")
def celery_redis_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One worker on Redis (broker and result backend) for the whole session."""
    yield from _session_worker("redis", tmp_path_factory, REDIS_DB["contract"])


@pytest.fixture(scope="session")
def celery_rabbitmq_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One worker on RabbitMQ (results in Redis) for the whole session."""
    yield from _session_worker("rabbitmq", tmp_path_factory, REDIS_DB["contract-rabbitmq-results"])


def celery_factory(kind: str) -> Any:
    """A contract-suite factory: a CeleryExecutor on the session worker of ``kind``."""

    def build(request: pytest.FixtureRequest, config: Any, parallelism: int | None) -> Any:
        worker = request.getfixturevalue(f"celery_{kind}_worker")
        from airdask.executors.celery.executor import CeleryExecutor

        return CeleryExecutor(parallelism, config=config.with_overrides(worker.overrides))

    return build


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrivateRedis:
    """A redis-server of this test's own (to be killed without touching the shared one)."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import shutil

        binary = shutil.which("redis-server")
        if binary is None:
            skip_or_fail("redis-server is not installed")
        self.process = subprocess.Popen(
            [str(binary), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not _port_open("127.0.0.1", self.port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"
