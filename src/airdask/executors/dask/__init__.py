"""The Dask backend: :class:`DaskExecutor` and the parts it is built from.

``executor`` holds the class; the other modules are its parts, each usable alone with a
``distributed.Client``: ``connect`` (reaching or embedding a cluster), ``shipping`` (the
runner onto workers without airdask), ``routing`` (queues and pools as worker resources),
``submit`` (submission groups), ``tracking`` and ``done`` (what is in flight, what finished),
``harvest`` (outcomes as task states), ``task_logs`` (writing logs), ``keeper`` (the plugin
on the Dask scheduler that keeps outcomes, never results: ADR 0003), ``adoption`` (the
executor's side of it: acknowledging, withdrawing, adopting), ``watch`` (the connection
across outages), ``ops`` (live logs, kept logs, the cluster's summary) and ``cli``
(``airdask dask ...``).

The imports are absolute throughout: ``import dask`` in here is the top-level ``dask``.
"""

from airdask.executors.dask.executor import DaskExecutor

__all__ = ["DaskExecutor"]
