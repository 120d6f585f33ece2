"""A real Apache Airflow 3 deployment on this machine, for the tests and the benchmark.

Processes, each a subprocess of the test on free loopback ports, logs in ``<home>/logs``:
``airflow api-server``, ``airflow dag-processor``, ``airflow scheduler`` (the executor runs in
it), a ``dask scheduler`` and Dask workers. The Dask workers get a database URL that points
at a closed port: they run tasks through Airflow's Execution API and never touch the
metadata database. Everything waits on a condition with a deadline, never on a bare sleep.

PostgreSQL: a fresh database on the shared server per :class:`AirflowStack`, dropped by
:meth:`AirflowStack.close`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import textwrap
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from proc_support import pid_alive, wait_for

PG_ADMIN_URL = os.environ.get(
    "AIRDASK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
DEAD_DB_URL = "postgresql+psycopg2://nobody:nothing@127.0.0.1:9/no_database"
JWT_SECRET = "airdask-test-secret"
DAG_FOLDER = Path(__file__).resolve().parent / "airflow_dags"
FINISHED_RUN_STATES = ("success", "failed")
#: Run by the Airflow venv's python with a path: writes an ExecuteTask workload for a task
#: instance that does not exist, with a token no API server accepts.
WORKLOAD_WRITER = textwrap.dedent(
    """
    import sys, uuid
    from airflow.executors.workloads import BundleInfo, ExecuteTask
    from airflow.executors.workloads.task import TaskInstanceDTO

    ti = TaskInstanceDTO(
        id=uuid.uuid4(), task_id="t", dag_id="d", run_id="r", try_number=1,
        dag_version_id=uuid.uuid4(), pool_slots=1, priority_weight=1, queue="default",
    )
    workload = ExecuteTask(ti=ti, dag_rel_path="d.py", token="x", log_path=None,
                           bundle_info=BundleInfo(name="dags-folder"))
    open(sys.argv[1], "w").write(workload.model_dump_json())
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class WorkerSpec:
    name: str
    nthreads: int = 2
    resources: dict[str, float] = field(default_factory=dict)


def create_database() -> str:
    """A fresh database on the shared server; its Airflow (psycopg2) URL."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"airdask_af_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(drivername="postgresql+psycopg2", database=name)
    admin.dispose()
    return url.render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = url.rsplit("/", 1)[1]
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


class AirflowStack:
    """Airflow's components + a Dask cluster, started and stopped as the tests need."""

    def __init__(
        self,
        bin_dir: Path,
        home: Path,
        *,
        executor: str = "airdask.airflow.DaskExecutor",
        parallelism: int = 4,
        workers: Sequence[WorkerSpec] = (WorkerSpec("w1"), WorkerSpec("w2")),
        extra_env: dict[str, str] | None = None,
        dag_folder: Path = DAG_FOLDER,
    ) -> None:
        self.bin = bin_dir
        self.home = home
        self.logs = home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.ledger = home / "ledger.txt"
        self.ledger.touch()
        self.executor = executor
        self.worker_specs = list(workers)
        self.api_port = free_port()
        self.dask_port = free_port()
        self.db_url = create_database()
        self.engine: Engine = create_engine(self.db_url.replace("psycopg2", "psycopg"))
        self.procs: dict[str, Proc] = {}
        self.env = self._base_env(parallelism, dag_folder, extra_env or {})

    # ---- environment -------------------------------------------------------------------

    def _base_env(
        self, parallelism: int, dag_folder: Path, extra: dict[str, str]
    ) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DASK_"))}
        env.update(
            {
                "PATH": f"{self.bin}:{env.get('PATH', '')}",
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__EXECUTOR": self.executor,
                "AIRFLOW__CORE__PARALLELISM": str(parallelism),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url,
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(dag_folder),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": JWT_SECRET,
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": (
                    f"http://127.0.0.1:{self.api_port}/execution/"
                ),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                # Airflow's advice for timeouts under high load: the suite shares 2 cores,
                # and a CI run beside other work saw a task's supervisor fail on the 5 s
                # default ("ReadTimeout: timed out" talking to the api-server).
                "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
                # A killed scheduler's tasks are adopted within seconds, not minutes.
                "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "8",
                "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "4",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__DASK__CLUSTER_ADDRESS": f"tcp://127.0.0.1:{self.dask_port}",
                "AIRDASK_TEST_LEDGER": str(self.ledger),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra)
        return env

    def worker_env(self, spec: WorkerSpec) -> dict[str, str]:
        env = dict(self.env)
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = DEAD_DB_URL  # workers need no database
        env["AIRDASK_TEST_WORKER"] = spec.name
        return env

    # ---- processes ---------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                argv,
                env=env or self.env,
                cwd=self.home,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        return proc

    def airflow(self, *args: str, timeout: float = 180.0) -> str:
        done = subprocess.run(
            [str(self.bin / "airflow"), *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"airflow {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start_dask(self) -> None:
        dask = str(self.bin / "dask")
        env = dict(self.env)
        # Retries are Airflow's: a task whose worker died fails in Dask at once.
        env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "0"
        self.spawn(
            "dask-scheduler",
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(self.dask_port),
             "--dashboard-address", "127.0.0.1:0", "--no-show"],
            env,
        )  # fmt: skip
        for spec in self.worker_specs:
            self.start_worker(spec)
        self.wait_for_workers(len(self.worker_specs))

    def start_worker(self, spec: WorkerSpec) -> Proc:
        argv = [str(self.bin / "dask"), "worker", f"tcp://127.0.0.1:{self.dask_port}",
                "--nthreads", str(spec.nthreads), "--nworkers", "1", "--no-nanny",
                "--no-dashboard", "--name", spec.name, "--host", "127.0.0.1"]  # fmt: skip
        if spec.resources:
            argv += ["--resources", ",".join(f"{k}={v:g}" for k, v in spec.resources.items())]
        return self.spawn(f"dask-worker-{spec.name}", argv, self.worker_env(spec))

    def dask_workers(self) -> dict[str, dict[str, Any]]:
        """{worker name: scheduler_info entry}, asked through the Airflow venv's Dask."""
        code = (
            "import json, sys; from distributed import Client\n"
            f"c = Client('tcp://127.0.0.1:{self.dask_port}', timeout=10)\n"
            "ws = c.scheduler_info(n_workers=-1)['workers']\n"
            "print(json.dumps({w['name']: {'address': a, 'pid': w.get('pid'), "
            "'resources': w['resources']} for a, w in ws.items()}))\nc.close()\n"
        )
        done = subprocess.run(
            [str(self.bin / "python"), "-c", code], capture_output=True, text=True,
            timeout=60, check=False, env=self.env,
        )  # fmt: skip
        if done.returncode != 0:
            return {}
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    def wait_for_workers(self, count: int, timeout: float = 90.0) -> None:
        wait_for(
            lambda: len(self.dask_workers()) >= count,
            timeout=timeout,
            what=f"{count} Dask workers",
        )

    def start_airflow(self) -> None:
        self.airflow("db", "migrate", timeout=300)
        self.spawn("api-server", [str(self.bin / "airflow"), "api-server",
                                  "--host", "127.0.0.1", "--port", str(self.api_port)])  # fmt: skip
        self.spawn("dag-processor", [str(self.bin / "airflow"), "dag-processor"])
        self.start_scheduler()
        self.wait(self.api_ready, 180, "the API server", "api-server")

    def start_scheduler(self) -> Proc:
        return self.spawn("scheduler", [str(self.bin / "airflow"), "scheduler"])

    def wait(self, predicate: Any, timeout: float, what: str, *names: str) -> None:
        """wait_for, failing early (with its log) if one of the named processes died."""

        def check() -> bool:
            for name in names:
                proc = self.procs.get(name)
                if proc is not None and not proc.alive():
                    raise AssertionError(f"{name} exited while waiting for {what}:\n{proc.tail()}")
            return bool(predicate())

        wait_for(check, timeout=timeout, what=what)

    def api_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/api/v2/version", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.api_url}/api/v2/{path}", data=data, method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    # ---- DAG runs ----------------------------------------------------------------------

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())

    def wait_for_dags(self, *dag_ids: str, timeout: float = 180.0) -> None:
        def parsed() -> bool:
            rows = self.query(
                "select count(*) from dag where dag_id = any(:ids) and not is_stale",
                ids=list(dag_ids),
            )
            return bool(rows[0][0] == len(dag_ids))

        self.wait(parsed, timeout, f"DAGs {dag_ids} parsed", "dag-processor")

    def trigger(self, dag_id: str, run_id: str | None = None) -> str:
        run_id = run_id or f"{dag_id}-{uuid.uuid4().hex[:8]}"
        self.api("POST", f"dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None})
        return run_id

    def run_state(self, run_id: str) -> str | None:
        rows = self.query("select state from dag_run where run_id = :r", r=run_id)
        return str(rows[0][0]) if rows else None

    def wait_for_run(self, run_id: str, timeout: float = 300.0) -> str:
        self.wait(
            lambda: self.run_state(run_id) in FINISHED_RUN_STATES,
            timeout,
            f"run {run_id} to finish",
            "scheduler",
        )
        return str(self.run_state(run_id))

    def ti_states(self, run_id: str) -> dict[str, tuple[str, int]]:
        rows = self.query(
            "select task_id, map_index, state, try_number from task_instance where run_id = :r",
            r=run_id,
        )
        return {
            (task if index < 0 else f"{task}[{index}]"): (str(state), int(tries))
            for task, index, state, tries in rows
        }

    def ledger_lines(self) -> list[list[str]]:
        return [line.split() for line in self.ledger.read_text().splitlines() if line.strip()]

    # ---- stopping ----------------------------------------------------------------------

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.popen.pid, sig)
        proc.popen.wait(timeout=60)

    def stop(self, name: str, timeout: float = 30.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or not proc.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGTERM)
        try:
            proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(timeout=30)

    def close(self) -> None:
        for name in ("scheduler", "dag-processor", "api-server"):
            self.stop(name)
        for name in [n for n in self.procs if n.startswith("dask-worker")]:
            self.stop(name)
        for name in list(self.procs):
            self.stop(name)
        self.engine.dispose()
        drop_database(self.db_url)


def leftover_processes(home: Path) -> list[str]:
    """Command lines of live processes of the stack at ``home``: its own components and
    anything they started (workloads, their supervisors and tasks inherit AIRFLOW_HOME)."""
    marker = f"AIRFLOW_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in environ and pid_alive(int(entry.name)):
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found
