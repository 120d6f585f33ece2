"""What DaskExecutor sends to the cluster: submission groups, the datasets that make
attempts adoptable, and the scheduler query that finds where attempts run."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from airdask.runner import TaskSpec
from airdask.state import TaskInstanceKey

log = logging.getLogger(__name__)

#: Each attempt's future is published as the dataset ``airdask/<dask key>``.
DATASET_PREFIX = "airdask/"
#: Most attempts per ``client.map`` message (keeps each graph message around 1 MB).
SUBMIT_CHUNK = 1000


@dataclass
class Pending:
    """An attempt accepted by ``execute_async`` and not yet handed to Dask."""

    key: TaskInstanceKey
    spec: TaskSpec
    priority: int
    resources: dict[str, float] | None


def chunked_groups(
    pending: list[Pending],
) -> Iterator[tuple[int, dict[str, float] | None, list[Pending]]]:
    """``(priority, resources, attempts)`` per ``client.map`` call, in submission order."""
    groups: dict[tuple[int, tuple[tuple[str, float], ...]], list[Pending]] = {}
    for item in pending:
        group = (item.priority, tuple(sorted((item.resources or {}).items())))
        groups.setdefault(group, []).append(item)
    for (priority, resources), items in groups.items():
        for start in range(0, len(items), SUBMIT_CHUNK):
            yield priority, dict(resources) or None, items[start : start + SUBMIT_CHUNK]


def dataset_name(key: str) -> str:
    return DATASET_PREFIX + key


def split_external_id(external_id: str | None) -> tuple[str, str] | None:
    """``(scheduler id, dask key)`` from an external id DaskExecutor wrote, else None."""
    if not external_id or "/" not in external_id:
        return None
    scheduler_id, _, key = external_id.partition("/")
    return (scheduler_id, key) if scheduler_id and key else None


def publish(client: Any, futures: dict[str, Any]) -> None:
    """Publish attempts (one request) so that a new client can adopt them."""
    try:
        client.publish_dataset({dataset_name(k): f for k, f in futures.items()})
    except Exception as exc:  # adoption gets harder, running does not
        log.warning("could not publish %d attempt(s) for adoption: %s", len(futures), exc)


def unpublish(client: Any, keys: list[str]) -> None:
    try:
        client.unpublish_dataset([dataset_name(k) for k in keys])
    except Exception as exc:
        log.warning("could not unpublish %d attempt(s): %s", len(keys), exc)


class UnpublishBatch:
    """Harvested attempts whose datasets are still to be removed, sent in batches.

    Removing them one heartbeat at a time cost a scheduler round trip per heartbeat. A
    dataset kept a little longer is harmless: it holds only a small finished result, and
    adopting an attempt that was harvested but not yet recorded recovers its outcome."""

    def __init__(self, *, max_keys: int = 1000, max_delay: float = 0.5) -> None:
        self.max_keys = max_keys
        self.max_delay = max_delay
        self._keys: list[str] = []
        self._since = 0.0

    def add(self, keys: list[str]) -> None:
        if keys and not self._keys:
            self._since = time.monotonic()
        self._keys.extend(keys)

    def due(self) -> list[str]:
        """The batch to remove now: all, once it is big or old enough; else nothing."""
        if not self._keys:
            return []
        if len(self._keys) >= self.max_keys or time.monotonic() - self._since >= self.max_delay:
            return self.take()
        return []

    def take(self) -> list[str]:
        keys, self._keys = self._keys, []
        return keys


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
