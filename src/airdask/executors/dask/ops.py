"""What DaskExecutor asks of the cluster besides running attempts: killing attempts where
they run (and finding where that is), reading a running attempt's log, and describing the
workers.

Plain functions of a ``distributed.Client``: the executor passes in the runner functions it
shipped (``kill_tasks``, ``read_live_log``), so nothing here needs airdask on the workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from airdask.executors.dask.routing import worker_resources

log = logging.getLogger(__name__)

#: Cancel reasons the executor itself uses (revoke, terminate, cleanup): harvesting tells
#: them from Dask's own cancellations by this prefix.
OUR_CANCEL_PREFIX = "airdask:"


def kill_and_cancel(
    client: Any,
    kill_tasks: Callable[..., Any],
    names: list[str],
    futures: list[Any],
    reason: str,
) -> None:
    """Kill the process groups of the attempts ``names`` where they run (one round trip per
    worker, not per attempt), then cancel their ``futures`` with an airdask reason."""
    by_worker: dict[str, list[str]] = {}
    for name, address in processing_on(client, names).items():
        by_worker.setdefault(address, []).append(name)
    for address, group in by_worker.items():
        try:
            client.run(kill_tasks, group, reason, workers=[address])
        except Exception as exc:
            log.warning("could not kill %d attempt(s) on %s: %s", len(group), address, exc)
    try:
        client.cancel(futures, reason=f"{OUR_CANCEL_PREFIX} {reason}", force=True)
    except Exception as exc:
        log.warning("could not cancel %d attempt(s): %s", len(futures), exc)


def processing_on(client: Any, names: list[str]) -> dict[str, str]:
    """``{dask key: worker address}`` of those attempts that a worker is running."""
    wanted = set(names)

    def where(dask_scheduler: Any) -> dict[str, str]:
        found = {}
        for name in wanted:
            ts = dask_scheduler.tasks.get(name)
            if ts is not None and ts.processing_on is not None:
                found[name] = ts.processing_on.address
        return found

    try:
        return dict(client.run_on_scheduler(where))
    except Exception as exc:
        log.warning("could not ask the Dask scheduler where tasks run: %s", exc)
        return {}


def live_log(
    client: Any, read_live_log: Callable[..., Any], name: str, address: str | None
) -> tuple[list[str], list[str]] | None:
    """``(messages, lines)`` of a running attempt's log, read from its worker (from every
    worker when the executor does not know which one runs it); None if none has it."""
    try:
        texts = client.run(read_live_log, name, workers=[address] if address else None)
    except Exception as exc:
        log.info("could not read the live log of %s: %s", name, exc)
        return None
    for worker, text in texts.items():
        if text is not None:
            return [f"live log from worker {worker}"], text.splitlines()
    return None


def cluster_summary(client: Any) -> dict[str, Any]:
    """The scheduler's address, the number of workers and the resources they offer in all,
    as :func:`airdask.display.executor_html` takes them; empty if the scheduler cannot say
    (a display must not raise)."""
    try:
        offers = worker_resources(client)
        address = str(client.scheduler.address)
    except Exception as exc:
        log.debug("no cluster details for the display: %s", exc)
        return {}
    total: dict[str, float] = {}
    for offered in offers.values():
        for name, amount in offered.items():
            total[name] = total.get(name, 0) + amount
    return {"scheduler_address": address, "workers": len(offers), "resources": total}
