"""``[dask] connect_timeout`` bounds the first connection only: once connected, a Client
keeps Dask's own reconnect window (a Client's ``timeout`` is also how long it tries to
reconnect after losing its scheduler, and an outage must not close it for good).

Through the public executor (``load_executor``), so the test does not depend on where the
Dask backend keeps its connection code."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from airdask.config import Config
from airdask.executors import load_executor
from dask_support import external_cluster
from proc_support import wait_for


@pytest.mark.timeout(60)
def test_unreachable_address_fails_after_the_connect_timeout(config: Config) -> None:
    short = config.with_overrides({("dask", "connect_timeout"): 0.5})
    executor = load_executor("DaskExecutor", config=short, cluster_address="tcp://127.0.0.1:9")
    with pytest.raises(Exception, match=r"tcp://127\.0\.0\.1:9 after 0\.5 s"):
        executor.start()


@pytest.mark.timeout(120)
def test_an_outage_longer_than_the_connect_timeout_does_not_close_the_client(
    config: Config, tmp_path: Path
) -> None:
    short = config.with_overrides({("dask", "connect_timeout"): 1})
    with external_cluster(tmp_path) as cluster:
        executor = load_executor("DaskExecutor", config=short, cluster_address=cluster.address)
        executor.start()
        client = executor.client  # type: ignore[attr-defined]
        try:
            cluster.kill_scheduler()
            wait_for(lambda: client.status == "connecting", timeout=20, what="client to notice")
            lost = time.monotonic()
            # The outage is the scenario: it must outlast the connect timeout (1 s).
            wait_for(
                lambda: client.status == "closed" or time.monotonic() - lost > 3,
                timeout=20,
                what="3 s of outage",
            )
            assert client.status == "connecting"
        finally:
            executor.terminate()
