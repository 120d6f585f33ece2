"""Attaching to a shared cluster while another client cancels keys.

Dask's scheduler tells every client about each cancelled key; a client whose handshake
shares a batch with that message fails with a bare AssertionError. Without the retry in
``attach_client`` about one connection in six failed beside the cancelling client below."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from distributed import Client, LocalCluster

from airdask.config import Config
from airdask.executors.dask.connect import connect


@pytest.fixture
def busy_cluster() -> Iterator[str]:
    """A scheduler (no workers) with a client that submits and cancels in a loop."""
    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster,
        Client(cluster, set_as_default=False) as other,
    ):
        stop = threading.Event()

        def cancel_forever() -> None:
            while not stop.is_set():
                other.submit(sum, [1], pure=False, resources={"nowhere": 1}).cancel()

        thread = threading.Thread(target=cancel_forever, daemon=True)
        thread.start()
        try:
            yield cluster.scheduler_address
        finally:
            stop.set()
            thread.join(timeout=30)


@pytest.mark.timeout(180)
def test_connecting_beside_a_client_that_cancels_keys_always_succeeds(
    config: Config, busy_cluster: str
) -> None:
    for _ in range(40):
        conn = connect(config, address=busy_cluster, client=None, security=None)
        try:
            assert conn.client.status == "running"
        finally:
            conn.close()
