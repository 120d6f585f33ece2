"""Adoption: a new DaskExecutor re-attaches to attempts a dead scheduler process submitted.

The futures of each submission are published as datasets ``{dask key: future}``;
``get_dataset`` hands the new client futures bound to them, so an attempt keeps running (or
keeps its finished result) and is never submitted a second time. Nothing is adopted from a
different Dask scheduler: its id is part of ``external_executor_id``.

Adoption reads every airdask dataset on the scheduler (a restart is rare; this costs one
request and a future per attempt in flight). It removes nothing it did not adopt: a dataset
of a client that is gone may still be claimed by the scheduler that owned its attempts, once
that scheduler's job is declared dead; until then only a Dask scheduler restart clears it.

This module *finds* what can be adopted (:func:`find_adoptable`); the executor applies it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airdask.commands import dask_key

if TYPE_CHECKING:
    from airdask.store.models import TaskInstance

log = logging.getLogger(__name__)

#: The futures of a submission are published in datasets ``airdask/<owner client id>/<uuid>``
#: of ``{dask key: future}``, at most DATASET_MAX attempts each: a dataset holds the results
#: of its finished attempts (with their log tails) until its last attempt is harvested.
DATASET_PREFIX = "airdask/"
DATASET_MAX = 100


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


@dataclass
class Found:
    """A task instance whose attempt is still known to the Dask scheduler."""

    ti: TaskInstance
    name: str  # its Dask key
    dataset: str  # the dataset that holds its future
    future: Any


def find_adoptable(
    client: Any, scheduler_id: str | None, tis: Sequence[TaskInstance]
) -> tuple[list[Found], list[TaskInstance]]:
    """The attempts of ``tis`` that ``client``'s scheduler (id ``scheduler_id``) still holds,
    and the task instances that cannot be adopted."""
    not_adopted: list[TaskInstance] = []
    candidates: list[tuple[TaskInstance, str]] = []
    for ti in tis:
        parsed = split_external_id(ti.external_executor_id)
        if parsed is None or parsed[0] != scheduler_id:
            why = "no external id" if parsed is None else f"Dask scheduler {parsed[0]} is gone"
            log.info("not adopting %s: %s", ti.key, why)
            not_adopted.append(ti)
        elif parsed[1] != dask_key(ti.key):
            log.warning("not adopting %s: external id %s is another attempt", ti.key, parsed[1])
            not_adopted.append(ti)
        else:
            candidates.append((ti, parsed[1]))
    if not candidates:
        return [], not_adopted
    try:
        published = published_futures(client)
    except Exception as exc:
        log.error("could not look up attempts to adopt: %s", exc)
        return [], not_adopted + [ti for ti, _ in candidates]
    found: list[Found] = []
    for ti, name in candidates:
        entry = published.get(name)
        if entry is None:
            not_adopted.append(ti)
        else:
            found.append(Found(ti, name, *entry))
    return found, not_adopted


def published_futures(client: Any) -> dict[str, tuple[str, Any]]:
    """``{dask key: (dataset, future)}`` over every airdask dataset on the scheduler."""
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
