"""Following the executor's connection to its Dask scheduler across outages.

A lost connection is not an outcome (ADR 0003): the attempts keep running on the cluster
(the keeper holds them) and their outcomes wait in the keeper. So the executor only needs
to know, at each ``sync()``, whether it may use the cluster now, and whether it came back to
the *same* Dask scheduler (reconcile its attempts with the keeper) or to a new one (its
attempts died with the old one; the runner and the keeper must be installed again).

Dask's Client reconnects by itself for a while and then closes; a closed client of an
address is replaced by a new one, made on a background thread so that the scheduler loop
never waits on a connection attempt. So is a client whose own reconnect stalled: Dask's
``Client._reconnect`` tries again only on ``OSError``, so a handshake that loses the
cancelled-keys race (see :func:`~airdask.executors.dask.connect.attach_client`) ends it
with the client ``connecting`` for ever, neither connected nor closed.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airdask.executors.dask.connect import DaskConnection

log = logging.getLogger(__name__)

#: Seconds between attempts to replace a closed client.
RETRY_SECONDS = 1.0
#: Seconds past its own reconnect window (``Client._timeout``) after which a client still
#: ``connecting`` is taken for one whose reconnect stalled, and replaced.
STALLED_GRACE_SECONDS = 5.0


class Link(enum.Enum):
    UP = "up"  # connected, nothing changed
    DOWN = "down"  # not connected: submit nothing
    BACK = "back"  # connected again, to the same scheduler
    NEW = "new"  # connected again, to another scheduler (a restarted one)


def scheduler_id(client: Any) -> str:
    return str(client.scheduler_info(n_workers=0)["id"])


class ConnectionWatch:
    """:meth:`check` says how the connection is, once per ``sync()``.

    :param conn: the executor's connection; its client is swapped for a new one when the
        old one closed and ``reconnect`` made another.
    :param reconnect: makes a new client when the old one has closed (None: wait for the
        client to come back by itself, e.g. a notebook's or an in-process cluster's).
    :param dead: whether the scheduler is known gone for good (an embedded cluster's Dask
        scheduler process that exited): then ``reconnect`` is called at once, without
        waiting for the client's own reconnect window to end.
    """

    def __init__(
        self,
        conn: DaskConnection,
        *,
        reconnect: Callable[[], Any] | None,
        dead: Callable[[], bool] | None = None,
    ) -> None:
        self.conn = conn
        self._dead = dead
        client = conn.client
        self.scheduler_id = scheduler_id(client)
        self._reconnect = reconnect
        self._comm = client.scheduler_comm
        self.down_since: float | None = None
        self._lock = threading.Lock()
        self._replacement: Any | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def check(self) -> Link:
        self._take_replacement()
        client = self.conn.client
        if client.status != "running":
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.warning("lost the Dask scheduler (client %s): submitting nothing until it "
                            "is back", client.status)  # fmt: skip
            if self._reconnect is not None and (
                client.status in ("closed", "closing")
                or self._stalled(client)
                or (self._dead is not None and self._dead())
            ):
                self._start_reconnecting()
            return Link.DOWN
        comm = client.scheduler_comm
        if self.down_since is None and comm is self._comm:
            return Link.UP
        self._comm = comm  # a new stream: the client reconnected (perhaps between checks)
        down = time.monotonic() - self.down_since if self.down_since is not None else 0.0
        self.down_since = None
        try:
            new_id = scheduler_id(client)
        except Exception as exc:  # gone again already
            log.warning("the Dask scheduler did not answer after reconnecting: %s", exc)
            self.down_since = time.monotonic()
            return Link.DOWN
        same = new_id == self.scheduler_id
        self.scheduler_id = new_id
        log.warning("connected to the Dask scheduler again after %.1fs (%s)", down,
                    "the same one" if same else f"a new one, {new_id}")  # fmt: skip
        return Link.BACK if same else Link.NEW

    def _stalled(self, client: Any) -> bool:
        """Whether ``client`` has been ``connecting`` for longer than its own reconnect
        could take (then Dask's reconnect ended without closing it)."""
        if client.status != "connecting" or self.down_since is None:
            return False
        window = float(getattr(client, "_timeout", 0) or 0) + STALLED_GRACE_SECONDS
        down = time.monotonic() - self.down_since
        if down <= window:
            return False
        if self._thread is None or not self._thread.is_alive():
            log.warning("the Dask client's own reconnect stalled (still connecting after "
                        "%.0fs): connecting anew", down)  # fmt: skip
        return True

    def _take_replacement(self) -> None:
        with self._lock:
            new, self._replacement = self._replacement, None
        if new is None:
            return
        old, self.conn.client = self.conn.client, new
        if old.status in ("closed", "closing"):
            _close_quietly(old)
        else:  # a stalled client: its close must not hold up the scheduler loop
            threading.Thread(
                target=_close_quietly, args=(old,), name="airdask-close-stalled", daemon=True
            ).start()

    def _start_reconnecting(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(
            target=self._reconnect_loop, name="airdask-dask-reconnect", daemon=True
        )
        self._thread.start()

    def _reconnect_loop(self) -> None:
        assert self._reconnect is not None
        while not self._stop.is_set():
            try:
                new = self._reconnect()
            except Exception as exc:
                log.info("Dask scheduler still unreachable: %s", exc)
                self._stop.wait(RETRY_SECONDS)  # a retry interval, not a synchronisation
                continue
            with self._lock:
                if not self._stop.is_set():
                    self._replacement = new
                    return
            new.close()  # made while the executor stopped
            return

    def close(self) -> None:
        """Stop reconnecting (a client made meanwhile becomes the connection's, which the
        executor then closes)."""
        with self._lock:
            self._stop.set()
        self._take_replacement()


def _close_quietly(client: Any) -> None:
    try:
        client.close()
    except Exception as exc:  # it was closed already, most likely
        log.debug("closing the old client: %s", exc)
