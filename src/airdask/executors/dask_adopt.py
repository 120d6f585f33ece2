"""Adoption: a new DaskExecutor re-attaches to attempts a dead scheduler process submitted.

The futures of each submission were published as one dataset ``{dask key: future}``;
``get_dataset`` hands the new client futures bound to them, so an attempt keeps running (or
keeps its finished result) and is never submitted a second time. Nothing is adopted from a
different Dask scheduler: its id is part of ``external_executor_id``.

Adoption reads every airdask dataset on the scheduler (a restart is rare; this costs one
request and a future per attempt in flight). A dataset from which nothing is adopted is
removed if the client that published it is gone: nobody else will ever claim it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airdask.commands import dask_key

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airdask.executors.dask import DaskExecutor
    from airdask.store.models import TaskInstance

log = logging.getLogger(__name__)


def adopt(executor: DaskExecutor, tis: Sequence[TaskInstance]) -> list[TaskInstance]:
    """Adopt what can be found; return the task instances that could not be."""
    from airdask.executors.dask_remote import split_external_id

    not_adopted: list[TaskInstance] = []
    candidates: list[tuple[TaskInstance, str]] = []
    for ti in tis:
        parsed = split_external_id(ti.external_executor_id)
        if parsed is None or parsed[0] != executor.scheduler_id:
            why = "no external id" if parsed is None else f"Dask scheduler {parsed[0]} is gone"
            log.info("not adopting %s: %s", ti.key, why)
            not_adopted.append(ti)
        elif parsed[1] != dask_key(ti.key):
            log.warning("not adopting %s: external id %s is another attempt", ti.key, parsed[1])
            not_adopted.append(ti)
        else:
            candidates.append((ti, parsed[1]))
    try:
        found = published_futures(executor.client)
    except Exception as exc:
        log.error("could not look up attempts to adopt: %s", exc)
        return not_adopted + [ti for ti, _ in candidates]
    claimed: set[str] = set()
    for ti, name in candidates:
        entry = found.get(name)
        if entry is None:
            not_adopted.append(ti)
            continue
        dataset, future = entry
        executor.adopt_future(ti.key, name, future, dataset)
        claimed.add(dataset)
        log.info("adopted %s (dask key %s, %s)", ti.key, name, future.status)
    drop_orphans(executor, {dataset for dataset, _ in found.values()} - claimed)
    return not_adopted


def published_futures(client: Any) -> dict[str, tuple[str, Any]]:
    """``{dask key: (dataset, future)}`` over every airdask dataset on the scheduler."""
    from airdask.executors.dask_remote import dataset_owner

    names = [str(n) for n in client.list_datasets() if dataset_owner(n) is not None]
    found: dict[str, tuple[str, Any]] = {}
    for name, futures in zip(names, client.get_dataset(names, default=None), strict=True):
        if isinstance(futures, dict):
            for key, future in futures.items():
                found[str(key)] = (name, future)
    return found


def drop_orphans(executor: DaskExecutor, datasets: set[str]) -> None:
    """Remove the datasets nobody adopted from whose publisher is no longer connected."""
    from airdask.executors.dask_remote import dataset_owner, unpublish

    if not datasets:
        return
    client = executor.client

    def client_ids(dask_scheduler: Any) -> list[str]:  # nested: shipped by value
        return [str(c) for c in dask_scheduler.clients]

    try:
        alive = set(client.run_on_scheduler(client_ids))
    except Exception as exc:
        log.warning("could not list the Dask scheduler's clients: %s", exc)
        return
    orphans = [d for d in datasets if dataset_owner(d) not in alive]
    if orphans:
        log.info("removing %d dataset(s) of clients that are gone", len(orphans))
        unpublish(client, orphans)
