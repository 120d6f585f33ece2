"""Resource routing against a real scheduler whose workers come and go."""

from __future__ import annotations

from pathlib import Path

import pytest
from distributed import Client

from airdask.executors.dask_routing import NoWorkerError, ResourceRouter
from dask_support import external_cluster


def test_a_worker_that_joins_after_the_first_fetch_is_found_at_once(tmp_path: Path) -> None:
    """The cache is filled before the gpu worker exists; the first miss must ask again
    (no rate limit on it), while repeated misses are rate-limited."""
    with (
        external_cluster(tmp_path) as cl,
        Client(cl.address, set_as_default=False) as client,
    ):
        router = ResourceRouter(client, ttl=3600, min_refresh=3600)
        assert router.offered() == {}
        cl.start_worker(resources="gpu=1", nthreads=1)
        client.wait_for_workers(1, timeout=60)
        assert router.resources_for(queue="gpu", pool=None) == {"gpu": 1.0}
        with pytest.raises(
            NoWorkerError, match=r"no worker offers queue 'tpu' \(workers offer: gpu=1\)"
        ):
            router.resources_for(queue="tpu", pool=None)
        # A second miss within min_refresh uses the cache instead of asking again.
        cl.start_worker(resources="tpu=1", nthreads=1)
        client.wait_for_workers(2, timeout=60)
        with pytest.raises(NoWorkerError):
            router.resources_for(queue="tpu", pool=None)


def test_unpublish_batches_by_size_and_age() -> None:
    from airdask.executors.dask_remote import UnpublishBatch

    batch = UnpublishBatch(max_names=3, max_delay=3600)
    assert batch.due() == []
    batch.add(["a"])
    batch.add(["b"])
    assert batch.due() == []  # small and young: it waits
    batch.add(["c", "d"])
    assert batch.due() == ["a", "b", "c", "d"] and batch.due() == []
    aged = UnpublishBatch(max_names=1000, max_delay=0.0)
    aged.add(["x"])
    assert aged.due() == ["x"]  # old enough, without anything added since
    batch.add(["e"])
    assert batch.take() == ["e"]  # what stopping the executor flushes


def test_a_dataset_is_done_when_all_its_attempts_are() -> None:
    from airdask.executors.dask_remote import Published, dataset_name, dataset_owner

    first, second = dataset_name("Client-a"), dataset_name("Client-b")
    assert first != dataset_name("Client-a") and dataset_owner(first) == "Client-a"
    assert dataset_owner("someone-elses") is None
    published = Published()
    published.add(first, ["k1", "k2"])
    published.add(second, ["k3"])
    assert published.done(["k1", "unknown"]) == []
    assert published.done(["k3"]) == [second]
    assert published.done(["k2", "k2"]) == [first]  # a second report changes nothing
    published.add(first, ["k4"])  # adopted later into the same dataset
    assert published.all() == [first] and published.done(["k4"]) == []
