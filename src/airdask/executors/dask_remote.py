"""What DaskExecutor sends to the cluster: submission groups, the datasets that make
attempts adoptable, and the scheduler query that finds where attempts run."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from airdask.runner import TaskSpec
from airdask.state import TaskInstanceKey

log = logging.getLogger(__name__)

#: The futures of a submission are published in datasets ``airdask/<owner client id>/<uuid>``
#: of ``{dask key: future}``, at most DATASET_MAX attempts each: a dataset holds the results
#: of its finished attempts (with their log tails) until its last attempt is harvested.
DATASET_PREFIX = "airdask/"
DATASET_MAX = 100
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


def dataset_name(owner: str) -> str:
    """A new dataset name for a submission by the client ``owner``."""
    return f"{DATASET_PREFIX}{owner}/{uuid.uuid4().hex}"


def dataset_owner(name: object) -> str | None:
    """The id of the client that published the dataset ``name``, if it is one of ours."""
    text = str(name)
    if not text.startswith(DATASET_PREFIX):
        return None
    owner, sep, _ = text[len(DATASET_PREFIX) :].rpartition("/")
    return owner if sep and owner else None


def split_external_id(external_id: str | None) -> tuple[str, str] | None:
    """``(scheduler id, dask key)`` from an external id DaskExecutor wrote, else None."""
    if not external_id or "/" not in external_id:
        return None
    scheduler_id, _, key = external_id.partition("/")
    return (scheduler_id, key) if scheduler_id and key else None


def publish(client: Any, datasets: dict[str, dict[str, Any]]) -> bool:
    """Publish ``{dataset name: {dask key: future}}`` in one request, so that a new client
    can adopt those attempts.

    A dataset per group of attempts, not per attempt: the scheduler keeps a pseudo-client
    per dataset, and one per attempt cost it a tenth of a millisecond each time."""
    try:
        client.publish_dataset(datasets)
    except Exception as exc:  # adoption gets harder, running does not
        count = sum(len(futures) for futures in datasets.values())
        log.warning("could not publish %d attempt(s) for adoption: %s", count, exc)
        return False
    return True


def unpublish(client: Any, names: list[str]) -> None:
    try:
        client.unpublish_dataset(names)
    except Exception as exc:
        log.warning("could not unpublish %d dataset(s): %s", len(names), exc)


class Published:
    """Which dataset holds each attempt in flight, and the datasets due for removal.

    A dataset is removed once every attempt in it was harvested (or revoked): until then
    it holds the finished ones' results too (each with its log tail), which is why datasets
    are kept small (DATASET_MAX). Emptied datasets are removed in batches (at most
    ``max_names``, or once ``max_delay`` seconds old): one at a time cost a scheduler round
    trip per heartbeat. A dataset kept a little longer is harmless, and adopting an attempt
    that was harvested but not yet recorded recovers its outcome."""

    def __init__(self, *, max_names: int = 100, max_delay: float = 0.5) -> None:
        self.max_names = max_names
        self.max_delay = max_delay
        self._dataset_of: dict[str, str] = {}
        self._left: dict[str, int] = {}
        self._emptied: list[str] = []
        self._since = 0.0

    def add(self, dataset: str, names: Iterable[str]) -> None:
        for name in names:
            if name not in self._dataset_of:
                self._dataset_of[name] = dataset
                self._left[dataset] = self._left.get(dataset, 0) + 1

    def done(self, names: Iterable[str]) -> None:
        """Mark attempts done; a dataset with none left in flight becomes due for removal."""
        for name in names:
            dataset = self._dataset_of.pop(name, None)
            if dataset is None:
                continue
            left = self._left[dataset] - 1
            if left:
                self._left[dataset] = left
                continue
            del self._left[dataset]
            if not self._emptied:
                self._since = time.monotonic()
            self._emptied.append(dataset)

    def due(self) -> list[str]:
        """The emptied datasets to remove now: all, once they are many or old enough."""
        if not self._emptied:
            return []
        if len(self._emptied) >= self.max_names or time.monotonic() - self._since >= self.max_delay:
            emptied, self._emptied = self._emptied, []
            return emptied
        return []

    def take_all(self) -> list[str]:
        """Every dataset, emptied or still holding attempts (what stopping removes)."""
        names = [*self._emptied, *self._left]
        self._dataset_of.clear()
        self._left.clear()
        self._emptied = []
        return names


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
