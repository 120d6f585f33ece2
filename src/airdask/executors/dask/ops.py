"""What DaskExecutor asks of the cluster besides running attempts: reading a running
attempt's log, taking the long log tails workers keep, and describing the workers.

Plain functions of a ``distributed.Client``: the executor passes in the runner functions it
shipped (``read_live_log``, ``take_kept_logs``), so nothing here needs airdask on the
workers.
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


def take_kept_logs(
    client: Any, take: Callable[..., Any], worker: str, names: list[str]
) -> dict[str, str | None]:
    """The log tails ``worker`` kept for the attempts ``names`` (None for each it does not
    have, or all of them when it cannot be reached)."""
    try:
        texts = client.run(take, names, workers=[worker], on_error="return")
    except Exception as exc:
        log.warning("could not take %d kept log(s) from %s: %s", len(names), worker, exc)
        return dict.fromkeys(names)
    found = texts.get(worker)
    return found if isinstance(found, dict) else dict.fromkeys(names)


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
