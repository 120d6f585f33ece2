"""A ``dask scheduler --preload``: the first client to register gets a second message in
the batch of its ``stream-start``, as when another client's cancel is broadcast at that
moment (the cancelled-keys race of ``attach_client``). A Client that reconnects by itself
fails its handshake on it and stays ``connecting``; later clients are left alone."""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin


class StallFirstClient(SchedulerPlugin):
    name = "stall-first-client"

    def __init__(self) -> None:
        self.left = 1

    def add_client(self, scheduler: Any, client: str) -> None:
        if self.left <= 0:
            return
        self.left -= 1

        def crowd() -> None:  # runs once add_client has sent stream-start, within its batch
            comm = scheduler.client_comms.get(client)
            if comm is not None:
                comm.send({"op": "cancelled-keys", "keys": []})

        scheduler.loop.add_callback(crowd)


async def dask_setup(scheduler: Any) -> None:
    scheduler.add_plugin(StallFirstClient())
