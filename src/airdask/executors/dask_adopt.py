"""Adoption: a new DaskExecutor re-attaches to attempts a dead scheduler process submitted.

Each attempt's future was published as a dataset named after its Dask key; ``get_dataset``
hands the new client a future bound to it, so the attempt keeps running (or keeps its
finished result) and is never submitted a second time. Nothing is adopted from a different
Dask scheduler: its id is part of ``external_executor_id``.
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
    from airdask.executors.dask_remote import dataset_name, split_external_id

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
    client = executor.client
    try:
        found: list[Any] = client.get_dataset(
            [dataset_name(name) for _, name in candidates], default=None
        )
    except Exception as exc:
        log.error("could not look up attempts to adopt: %s", exc)
        return not_adopted + [ti for ti, _ in candidates]
    for (ti, name), future in zip(candidates, found, strict=True):
        if future is None:
            not_adopted.append(ti)
            continue
        executor.adopt_future(ti.key, name, future)
        log.info("adopted %s (dask key %s, %s)", ti.key, name, future.status)
    return not_adopted
