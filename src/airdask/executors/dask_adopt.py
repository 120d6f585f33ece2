"""Adoption: a new DaskExecutor re-attaches to attempts a dead scheduler process submitted.

The futures of each submission were published as one dataset ``{dask key: future}``;
``get_dataset`` hands the new client futures bound to them, so an attempt keeps running (or
keeps its finished result) and is never submitted a second time. Nothing is adopted from a
different Dask scheduler: its id is part of ``external_executor_id``.

Adoption reads every airdask dataset on the scheduler (a restart is rare; this costs one
request and a future per attempt in flight). It removes nothing it did not adopt: a dataset
of a client that is gone may still be claimed by the scheduler that owned its attempts, once
that scheduler's job is declared dead; until then only a Dask scheduler restart clears it.
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
    if not candidates:
        return not_adopted
    try:
        found = published_futures(executor.client)
    except Exception as exc:
        log.error("could not look up attempts to adopt: %s", exc)
        return not_adopted + [ti for ti, _ in candidates]
    for ti, name in candidates:
        entry = found.get(name)
        if entry is None:
            not_adopted.append(ti)
            continue
        dataset, future = entry
        executor.adopt_future(ti.key, name, future, dataset)
        log.info("adopted %s (dask key %s, %s)", ti.key, name, future.status)
    return not_adopted


def published_futures(client: Any) -> dict[str, tuple[str, Any]]:
    """``{dask key: (dataset, future)}`` over every airdask dataset on the scheduler."""
    from airdask.executors.dask_remote import dataset_owner

    names = [str(n) for n in client.list_datasets() if dataset_owner(n) is not None]
    try:
        values = list(client.get_dataset(names, default=None))
    except Exception as exc:  # one bad dataset must not hide the others: one at a time
        log.warning("could not read the adoption datasets at once (%s); reading each", exc)
        values = [_one_dataset(client, name) for name in names]
    found: dict[str, tuple[str, Any]] = {}
    for name, futures in zip(names, values, strict=True):
        if isinstance(futures, dict):
            for key, future in futures.items():
                found[str(key)] = (name, future)
    return found


def _one_dataset(client: Any, name: str) -> Any:
    try:
        return client.get_dataset(name, default=None)
    except Exception as exc:
        log.warning("skipping adoption dataset %s: %s", name, exc)
        return None
