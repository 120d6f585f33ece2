"""Scale benchmark (issue 12): a DAG ``start >> [N no-op PythonTask] >> end`` through
``airdask run`` on the embedded cluster, beside raw Dask running the same callable on a
cluster of the same shape in the same run.

For each N it prints airdask's trigger-to-end wall time (DagRun.queued_at to end_date),
the raw Dask time (``client.map`` + ``gather`` of the same no-op over N items), their
ratio (target <= 1.25 at 10,000 and 100,000), the time per task, the CPU seconds of each
side's whole command (``airdask run`` with its workers; raw Dask's cluster start, map and
close: on a shared machine they move less than the wall times), the peak RSS (``VmHWM``)
of the ``airdask run`` process and of its embedded Dask scheduler's process, and the
database's size at the end. Raw Dask runs on a ``LocalCluster`` (its scheduler in the
benchmark's process), as a user of raw Dask gets it; ``--raw-cluster embedded`` runs it on
airdask's embedded cluster instead (its Dask scheduler in a process of its own).

Usage::

    python benchmarks/dag_scale.py [--sizes 1000,10000,100000] [--db sqlite|postgres | --postgres]
        [--raw-cluster local|embedded] [--repeat K]

``--repeat K`` runs K rounds per N, raw Dask and airdask one after the other in each (the
order alternating from round to round), and adds a line with the medians and the median of
the rounds' ratios: on a shared machine the speed drifts by tens of percent within minutes,
and a ratio of two runs taken side by side moves much less than either run's time.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text

from airdask.config import load_config
from airdask.store import DagRun, Store

DAG_FILE = """
from airdask.dag import DAG, PythonTask


def noop(i=None):
    return None


with DAG("scale") as dag:
    start = PythonTask("start", noop)
    middle = [PythonTask(f"t{{i:06d}}", noop) for i in range({n})]
    end = PythonTask("end", noop)
    start >> middle >> end
"""

WORKERS, THREADS = 2, 2
#: In the command line of the embedded cluster's Dask scheduler process (ADR 0013).
EMBEDDED_MARK = "airdask.executors.dask.embedded"


def noop(i: object = None) -> None:
    return None


def _cpu_seconds() -> tuple[float, float]:
    """(this process's CPU seconds, those of its reaped descendants)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def raw_cluster(shape: str) -> Any:
    """A fresh 2x2 cluster for raw Dask: a ``LocalCluster`` (``local``), or airdask's
    embedded cluster, its Dask scheduler in a process of its own (``embedded``)."""
    from distributed import LocalCluster

    from airdask.executors.dask.embedded import embedded_cluster

    if shape == "embedded":
        return embedded_cluster(load_config({"AIRDASK__DASK__DASHBOARD_ADDRESS": ":0"}))
    return LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=WORKERS, threads_per_worker=THREADS, processes=True, dashboard_address=":0"
    )


def raw_dask(n: int, shape: str = "local") -> tuple[float, float]:
    """Seconds for ``client.map(noop, range(n))`` + gather on a fresh cluster
    (:func:`raw_cluster`), and the CPU seconds of the whole (cluster start and close
    included, as in airdask's)."""
    from distributed import Client

    own0, children0 = _cpu_seconds()
    with raw_cluster(shape) as cluster, Client(cluster) as client:
        client.submit(noop, pure=False).result()  # the workers are warm, as airdask's are
        t0 = time.perf_counter()
        futures = client.map(noop, range(n), pure=False)
        client.gather(futures)
        wall = time.perf_counter() - t0
    own1, children1 = _cpu_seconds()
    return wall, (own1 - own0) + (children1 - children0)


def _peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _dask_scheduler_pid(parent: int) -> int | None:
    """The pid of the embedded cluster's Dask scheduler process under ``parent``, if any."""
    import psutil

    try:
        for child in psutil.Process(parent).children():
            if EMBEDDED_MARK in " ".join(child.cmdline()):
                return int(child.pid)
    except psutil.Error:
        pass
    return None


def pg_url(name: str) -> str:
    base = os.environ.get("AIRDASK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1/test")
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return str(admin.url.set(database=name).render_as_string(hide_password=False))


def drop_pg(name: str) -> None:
    base = os.environ.get("AIRDASK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1/test")
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def airdask_run(n: int, db: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        dag_file = home / "scale.py"
        dag_file.write_text(DAG_FILE.format(n=n))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRDASK")}
        env.update(
            AIRDASK_HOME=str(home),
            AIRDASK__CORE__PARALLELISM="0",
            AIRDASK__DASK__N_WORKERS=str(WORKERS),
            AIRDASK__DASK__THREADS_PER_WORKER=str(THREADS),
            AIRDASK__DASK__DASHBOARD_ADDRESS=":0",
        )
        pg_name = None
        if db == "postgres":
            pg_name = f"airdask_scale_{uuid.uuid4().hex[:8]}"
            env["AIRDASK__DATABASE__SQL_ALCHEMY_CONN"] = pg_url(pg_name)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "airdask.cli", "-q", "run", str(dag_file)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            peak = [0, 0]  # the airdask process, its Dask scheduler process

            def watch() -> None:
                dask_pid = None
                while proc.poll() is None:
                    peak[0] = max(peak[0], _peak_rss(proc.pid))
                    dask_pid = dask_pid or _dask_scheduler_pid(proc.pid)
                    if dask_pid:
                        peak[1] = max(peak[1], _peak_rss(dask_pid))
                    time.sleep(0.2)  # a sampling interval, not a synchronisation

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            _, children0 = _cpu_seconds()
            _, err = proc.communicate()
            _, children1 = _cpu_seconds()
            watcher.join()
            if proc.returncode != 0:
                sys.exit(f"airdask run of {n} tasks failed:\n{err[-3000:]}")
            config = load_config({k: v for k, v in env.items() if k.startswith("AIRDASK")})
            store = Store.from_config(config)
            with store.session() as session:
                run = session.scalars(select(DagRun)).one()
                assert run.end_date is not None and run.state == "success", run.state
                wall = (run.end_date - run.queued_at).total_seconds()
                if db == "postgres":
                    size = session.scalar(text("SELECT pg_database_size(current_database())"))
                else:
                    size = sum(p.stat().st_size for p in home.glob("airdask.db*"))
            store.dispose()
        finally:
            if pg_name is not None:
                drop_pg(pg_name)
    return {
        "wall": wall,
        "cpu": children1 - children0,
        "rss": float(peak[0]),
        "dask_rss": float(peak[1]),
        "db": float(size or 0),
    }


def dask_leftovers(n: int) -> str:
    """What an airdask run of the same DAG leaves on the Dask scheduler once it ended
    (``api.run_dag`` with a DaskExecutor on a LocalCluster that stays up): published
    datasets, the keeper's copies, tasks and task prefixes."""
    from distributed import Client, LocalCluster

    from airdask.api import run_dag
    from airdask.dag import DAG, PythonTask
    from airdask.executors.dask import DaskExecutor
    from airdask.store import init_db

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config({"AIRDASK_HOME": tmp, "AIRDASK__CORE__PARALLELISM": "0"})
        init_db(Store.from_config(config))
        with DAG("leftovers") as dag:
            start = PythonTask("start", noop)
            middle = [PythonTask(f"t{i:06d}", noop) for i in range(n)]
            start >> middle >> PythonTask("end", noop)
        with (
            LocalCluster(
                n_workers=WORKERS, threads_per_worker=THREADS, dashboard_address=":0"
            ) as cluster,
            Client(cluster) as client,
        ):
            prefixes_before = client.run_on_scheduler(_prefixes)
            result = run_dag(dag, executor=DaskExecutor(client=client, config=config))
            assert result.state == "success", result.state
            keeper = client.run_on_scheduler(_keeper_info)
            tasks = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
            prefixes = client.run_on_scheduler(_prefixes) - prefixes_before
            return (
                f"after a run of {n + 2:,} tasks: datasets {len(client.list_datasets())}, "
                f"keeper {keeper}, tasks on the Dask scheduler {tasks}, new task prefixes "
                f"{prefixes}"
            )


def _prefixes(dask_scheduler: Any) -> int:
    return len(dask_scheduler.task_prefixes)


def _keeper_info(dask_scheduler: Any) -> dict[str, int]:
    from airdask.executors.dask.keeper import KEEPER_NAME

    keeper = dask_scheduler.plugins.get(KEEPER_NAME)
    return keeper.info() if keeper is not None else {}


def _round(
    n: int, args: argparse.Namespace, *, airdask_first: bool
) -> tuple[dict[str, float], float, float]:
    """One round at N: airdask's figures, raw Dask's seconds and CPU seconds; prints its line."""
    if airdask_first:
        ours = airdask_run(n, args.db)
        raw, raw_cpu = raw_dask(n + 2, args.raw_cluster)
    else:
        raw, raw_cpu = raw_dask(n + 2, args.raw_cluster)
        ours = airdask_run(n, args.db)
    print(
        f"  N={n:>7,d}  airdask {ours['wall']:8.1f} s ({ours['wall'] / (n + 2) * 1000:.2f} "
        f"ms/task) | raw Dask {raw:7.1f} s | ratio {ours['wall'] / raw:5.2f} | "
        f"CPU {ours['cpu']:6.1f} s / {raw_cpu:6.1f} s | "
        f"peak RSS {ours['rss'] / 2**20:4.0f} MiB (Dask scheduler "
        f"{ours['dask_rss'] / 2**20:4.0f} MiB) | db {ours['db'] / 2**20:6.1f} MiB",
        flush=True,
    )
    return ours, raw, raw_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres", action="store_true", help="the same as --db postgres")
    parser.add_argument(
        "--raw-cluster", choices=("local", "embedded"), default="local",
        help="the cluster raw Dask runs on (airdask always runs on its embedded cluster)",
    )  # fmt: skip
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="K",
        help="K rounds per N, raw Dask and airdask side by side, with their medians",
    )  # fmt: skip
    parser.add_argument(
        "--leftovers", type=int, default=0, metavar="N",
        help="also run N tasks on a cluster that stays up and print what is left on it",
    )  # fmt: skip
    args = parser.parse_args()
    if args.postgres:
        args.db = "postgres"
    print(f"start >> N no-op PythonTask >> end; embedded cluster {WORKERS}x{THREADS}, {args.db}")
    per_task = {}
    for n in [int(s) for s in args.sizes.split(",")]:
        rounds = [_round(n, args, airdask_first=i % 2 == 1) for i in range(args.repeat)]
        walls = [ours["wall"] for ours, _, _ in rounds]
        per_task[n] = statistics.median(walls) / (n + 2) * 1000
        if args.repeat > 1:
            ratios = [ours["wall"] / raw for ours, raw, _ in rounds]
            print(
                f"  N={n:>7,d}  median of {args.repeat}: airdask {statistics.median(walls):.1f} s "
                f"({per_task[n]:.2f} ms/task) | raw Dask "
                f"{statistics.median(raw for _, raw, _ in rounds):.1f} s | ratio "
                f"{statistics.median(ratios):.2f} (rounds {min(ratios):.2f} to {max(ratios):.2f})"
            )
    if args.leftovers:
        print("  Dask scheduler", dask_leftovers(args.leftovers))
    if len(per_task) > 1:
        first, last = min(per_task), max(per_task)
        print(f"  time per task at {last:,} / at {first:,}: {per_task[last] / per_task[first]:.2f}")


if __name__ == "__main__":
    main()
