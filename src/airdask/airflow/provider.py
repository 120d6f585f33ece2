"""airdask as an Apache Airflow provider: what ``get_provider_info()`` tells Airflow.

Registered through the ``apache_airflow_provider`` entry point, so that ``airflow providers
list`` shows airdask, ``airflow providers executors`` its executor, ``airflow config list``
the ``[dask]`` section (with these defaults) and ``airflow dask ...`` its commands. Plain data:
reading it imports nothing of Airflow or Dask.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

EXECUTOR = "airdask.airflow.DaskExecutor"
SECTION = "dask"


@dataclass(frozen=True)
class Option:
    type: str  # Airflow's option types: string, boolean, integer, float
    default: str
    example: str
    description: str
    sensitive: bool = False


#: Every ``[dask]`` option the executor reads. This table is the documentation.
OPTIONS: dict[str, Option] = {
    "cluster_address": Option(
        "string",
        "tcp://127.0.0.1:8786",
        "tcp://dask-scheduler:8786",
        "Address of the Dask scheduler the executor submits tasks to (tcp:// or tls://).",
    ),
    "tls_ca": Option(
        "string", "", "/etc/dask/ca.pem", "CA certificate file for mutual TLS (tls:// addresses)."
    ),
    "tls_cert": Option(
        "string", "", "/etc/dask/client.pem", "Client certificate file for mutual TLS."
    ),
    "tls_key": Option(
        "string",
        "",
        "/etc/dask/client.key",
        "Client private key file for mutual TLS.",
        sensitive=True,
    ),
    "connect_timeout": Option(
        "float",
        "10",
        "5",
        "Seconds to wait for the Dask scheduler when connecting. While it cannot be reached, "
        "tasks handed to the executor fail with the reason (and Airflow retries them).",
    ),
    "parallelism": Option(
        "integer",
        "0",
        "8",
        "Most tasks this executor runs at once; 0 means [core] parallelism. Usually the "
        "number of Dask worker threads.",
    ),
    "pool_resources": Option(
        "string",
        "auto",
        "strict",
        "Airflow pools become Dask worker resources: a task in pool P with pool_slots=k asks "
        "for resource P=k when some worker offers P (dask worker --resources P=N). For pools "
        "no worker offers: auto (run unconstrained, warn once), strict (fail the task) or off "
        "(never constrain by pool).",
    ),
    "worker_python": Option(
        "string",
        "",
        "/opt/airflow/venv/bin/python",
        "Python interpreter the Dask workers run tasks with; empty means the interpreter of "
        "the Dask worker itself. It needs apache-airflow (core and task SDK) at the "
        "scheduler's version and the DAGs' providers.",
    ),
    "forkserver": Option(
        "boolean",
        "True",
        "False",
        "Give each Dask worker a fork server with Airflow imported once, which forks a "
        "process per task instead of starting a fresh interpreter (seconds of imports per "
        "task). Tasks still run in their own process group, killed on revoke and when their "
        "worker dies. False: a fresh interpreter per task.",
    ),
    "forkserver_preload": Option(
        "string",
        "airflow.providers.standard.operators.bash,airflow.providers.standard.operators.python",
        "mycompany.operators,airflow.providers.http.operators.http",
        "Comma-separated modules the fork servers import besides Airflow's own, typically "
        "the operators the DAGs use. A module that cannot be imported is skipped.",
    ),
    "log_max_bytes": Option(
        "integer",
        "1048576",
        "65536",
        "Largest tail of a task's own console output (its supervisor's messages) that a "
        "worker sends back. The task log itself is Airflow's, written on the worker.",
    ),
}


def airdask_version() -> str:
    try:
        return version("airdask")
    except PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"


def get_provider_info() -> dict[str, Any]:
    """The provider description Airflow validates against its provider_info schema."""
    options = {
        name: {
            "description": opt.description,
            "version_added": "0.1.0",
            "type": opt.type,
            "example": opt.example,
            "default": opt.default,
            **({"sensitive": True} if opt.sensitive else {}),
        }
        for name, opt in OPTIONS.items()
    }
    return {
        "package-name": "airdask",
        "name": "airdask",
        "description": "Run Apache Airflow 3 tasks on a Dask cluster (airdask's DaskExecutor).",
        "executors": [EXECUTOR],
        "config": {
            SECTION: {
                "description": "airdask's DaskExecutor: the Dask cluster Airflow's tasks run on.",
                "options": options,
            }
        },
        "cli": ["airdask.airflow.cli.get_cli_commands"],
    }
