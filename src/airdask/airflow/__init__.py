"""airdask inside Apache Airflow 3: a drop-in executor that runs Airflow's tasks on Dask.

``[core] executor = airdask.airflow.DaskExecutor`` (or ``LocalExecutor,dask:airdask.airflow.
DaskExecutor``) and ``[dask] cluster_address`` are all a deployment needs; the options are
listed by :func:`airdask.airflow.provider.get_provider_info` and ``airflow config list``.

The executor is an adapter: it owns one of airdask's own Dask executors
(:class:`airdask.executors.dask.DaskExecutor`) and translates Airflow's workloads, task
instance keys and events to and from it, so routing, pools as worker resources, priorities,
adoption, outcome classes and the runner's process supervision are airdask's, not a copy.

Nothing here is imported by ``import airdask``; this package imports Airflow only when its
executor is asked for (the provider information needs no Airflow at all).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DaskExecutor"]


def __getattr__(name: str) -> Any:
    if name == "DaskExecutor":
        from airdask.airflow.executor import DaskExecutor

        return DaskExecutor
    raise AttributeError(f"module 'airdask.airflow' has no attribute {name!r}")
