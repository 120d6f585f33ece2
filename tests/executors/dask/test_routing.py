"""Resource routing against a real scheduler whose workers come and go."""

from __future__ import annotations

from pathlib import Path

import pytest
from distributed import Client

from airdask.executors.dask.routing import NoWorkerError, ResourceRouter
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


def test_a_dataset_is_due_when_all_its_attempts_are_done() -> None:
    from airdask.executors.dask.adoption import Published, dataset_name, dataset_owner

    first, second = dataset_name("Client-a"), dataset_name("Client-b")
    assert first != dataset_name("Client-a") and dataset_owner(first) == "Client-a"
    assert dataset_owner("someone-elses") is None
    aged = Published(max_names=1000, max_delay=0.0)
    aged.add(first, ["k1", "k2"])
    aged.add(second, ["k3"])
    aged.done(["k1", "unknown"])
    assert aged.due() == []  # k2 is still in flight
    aged.done(["k3"])
    assert aged.due() == [second]  # old enough at once (max_delay 0)
    aged.done(["k2", "k2"])  # a second report changes nothing
    assert aged.due() == [first] and aged.due() == []
    aged.add(first, ["k4"])  # adopted later into the same dataset
    assert aged.take_all() == [first]
    aged.done(["k4"])
    assert aged.due() == []


def test_emptied_datasets_are_removed_in_batches_by_size_and_age() -> None:
    from airdask.executors.dask.adoption import Published

    batch = Published(max_names=3, max_delay=3600)
    for i, name in enumerate("abcde"):
        batch.add(name, [f"k{i}"])
    batch.done(["k0"])
    batch.done(["k1"])
    assert batch.due() == []  # few and young: they wait
    batch.done(["k2", "k3"])
    assert batch.due() == ["a", "b", "c", "d"] and batch.due() == []
    batch.done(["k4"])
    batch.add("f", ["k5"])
    assert batch.take_all() == ["e", "f"]  # what stopping the executor removes
    assert batch.due() == [] and batch.take_all() == []
