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
