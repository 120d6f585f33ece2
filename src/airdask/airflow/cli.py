"""``airflow dask ...``: commands of airdask's executor (registered by the provider's "cli")."""

from __future__ import annotations

import sys
from typing import Any


def worker_report() -> dict[str, Any]:
    """Runs on each Dask worker: what it needs to run Airflow's workloads."""
    import importlib.util
    import sys

    report: dict[str, Any] = {"python": sys.executable}
    try:
        from airflow import __version__

        importlib.util.find_spec("airflow.sdk.execution_time.supervisor")
        report["airflow"] = __version__
    except Exception as exc:
        report["airflow"] = None
        report["error"] = f"{type(exc).__name__}: {exc}"
    return report


def check(args: Any) -> None:
    """Connect to [dask] cluster_address; list each worker's resources and whether it can
    run Airflow's tasks (task SDK importable, same Airflow version as here)."""
    import dask
    from airflow import __version__ as here
    from airflow.configuration import conf

    from airdask.airflow.settings import Settings
    from airdask.executors.dask.connect import attach_client

    settings = Settings.read(conf)
    timeout = f"{settings.connect_timeout}s"
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": timeout}):
            client = attach_client(settings.cluster_address, timeout=timeout)
    except Exception as exc:
        print(f"cannot reach the Dask scheduler at {settings.cluster_address}: {exc}")
        sys.exit(1)
    problems = 0
    with client:
        info = client.scheduler_info(n_workers=-1)
        reports = client.run(worker_report) if info["workers"] else {}
        print(f"Dask scheduler {settings.cluster_address}: {len(info['workers'])} worker(s)")
        for address, worker in sorted(info["workers"].items()):
            report = reports.get(address, {})
            found = report.get("airflow")
            resources = ", ".join(f"{k}={v:g}" for k, v in sorted(worker["resources"].items()))
            status = "ok" if found == here else f"PROBLEM: {report.get('error') or found}"
            if found not in (None, here):
                status = f"PROBLEM: Airflow {found} on the worker, {here} here"
            problems += status != "ok"
            print(f"  {address} threads={worker['nthreads']} resources=[{resources}] {status}")
    if not info["workers"]:
        print("  no workers: tasks would wait until one joins")
        problems += 1
    sys.exit(1 if problems else 0)


def get_cli_commands() -> list[Any]:
    from airflow.cli.cli_config import ActionCommand, GroupCommand

    return [
        GroupCommand(
            name="dask",
            help="airdask's DaskExecutor",
            subcommands=[
                ActionCommand(
                    name="check",
                    help="Check the Dask cluster: workers, resources, Airflow on each worker",
                    func=check,
                    args=(),
                )
            ],
        )
    ]
