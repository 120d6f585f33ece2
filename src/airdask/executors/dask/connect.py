"""Connecting DaskExecutor to a cluster: an address, a passed-in Client, or an embedded
cluster (:mod:`.embedded`) whose workers offer the resources the caller passes in (the pools
table); mutual TLS from config."""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airdask.executors.base import ClusterUnreachableError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airdask.config import Config

log = logging.getLogger(__name__)


class DaskConnectError(RuntimeError):
    """The executor cannot reach, or cannot build, its Dask cluster; the message says why."""


class DaskUnreachableError(DaskConnectError, ClusterUnreachableError):
    """The Dask scheduler did not answer (it may be restarting)."""


def security_from_config(config: Config) -> Any | None:
    """A mutual-TLS ``distributed.Security`` from ``[dask] tls_*``, or None when unset.

    All three files must be given together; encryption is required.
    """
    ca, cert, key = config.dask.tls_ca, config.dask.tls_cert, config.dask.tls_key
    given = {"tls_ca": ca, "tls_cert": cert, "tls_key": key}
    if not any(given.values()):
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise DaskConnectError(
            f"[dask] {', '.join(missing)} missing: mutual TLS needs tls_ca, tls_cert and tls_key"
        )
    from distributed import Security

    return Security(  # type: ignore[no-untyped-call]
        tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True
    )


@dataclass
class DaskConnection:
    client: Any
    cluster: Any | None  # the embedded cluster we own, if any
    owns_client: bool

    def close(self) -> None:
        """Close what the executor created; a passed-in client is left open."""
        if self.owns_client:
            try:
                self.client.close()
            except Exception as exc:  # closing must not hide the caller's own error
                log.warning("error closing the Dask client: %s", exc)
        if self.cluster is not None:
            close_cluster(self.cluster)


def close_cluster(cluster: Any) -> None:
    """Close an embedded cluster, logging (not raising) what goes wrong: closing must not
    hide the caller's own error, and a cluster whose scheduler died can fail to close."""
    try:
        cluster.close()
    except Exception as exc:
        log.warning("error closing the embedded Dask cluster: %s", exc)


def current_client() -> Any | None:
    """The running default ``distributed.Client`` of this process (a notebook's), or None."""
    from distributed import Client

    try:
        found = Client.current(allow_global=True)  # type: ignore[no-untyped-call]
    except ValueError:  # no client in this process
        return None
    return found if getattr(found, "status", None) == "running" else None


#: How many times a handshake that lost Dask's race (see :func:`attach_client`) is tried again.
HANDSHAKE_RETRIES = 8


def attach_client(address: str, *, security: Any | None = None, timeout: float | str) -> Any:
    """A Client of ``address``, tried again when its handshake loses a race in Dask.

    Dask's scheduler sends every client a "cancelled-keys" message whenever any client
    cancels a key. A client that registers within the same 2 ms batch reads two messages
    where it asserts one and fails with a bare ``AssertionError`` (distributed 2026.8;
    measured: 18 of 100 connections beside a client cancelling in a loop). On a shared
    cluster that is another user's ordinary work, so it is retried, not reported.
    """
    from distributed import Client

    def attempt() -> Any:
        return Client(  # type: ignore[no-untyped-call]
            address, security=security, set_as_default=False, timeout=timeout
        )

    for _ in range(HANDSHAKE_RETRIES):
        try:
            return attempt()
        except AssertionError:
            log.debug("Dask handshake with %s crossed another message; again", address)
            # The half-made Client is left in a reference cycle with the traceback. Were it
            # collected later, its __del__ would close it from inside whatever runs then;
            # inside the next Client's start that deadlocks on Dask's class-wide loop lock
            # (seen: the race test hung in LoopRunner.stop under LoopRunner.start).
            gc.collect()
    return attempt()


def connect(
    config: Config,
    *,
    address: str | None,
    client: Any | None,
    security: Any | None,
    reuse_current_client: bool = True,
    worker_resources: Mapping[str, float] | None = None,
) -> DaskConnection:
    """Reuse ``client``, else attach to ``address``, else reuse the process's current Client
    (the notebook case), else start an embedded cluster. Clients we did not create are
    never closed by us."""
    if client is not None:
        return DaskConnection(client, None, owns_client=False)
    import dask
    from dask.utils import parse_timedelta
    from distributed import Client

    if address:
        try:
            new = attach_client(address, security=security, timeout=config.dask.connect_timeout)
            # Client's timeout is also how long it tries to reconnect after losing the
            # scheduler: keep Dask's window for that; connect_timeout is for start-up only.
            new._timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"))
            return DaskConnection(new, None, owns_client=True)
        except Exception as exc:
            raise DaskUnreachableError(
                f"cannot connect to Dask scheduler {address}: {exc}"
            ) from exc
    current = current_client() if reuse_current_client else None
    if current is not None:
        log.info("reusing this process's Dask client (scheduler %s)", current.scheduler.address)
        return DaskConnection(current, None, owns_client=False)
    from airdask.executors.dask.embedded import embedded_cluster

    cluster = embedded_cluster(config, resources=worker_resources)
    try:
        new = Client(cluster, set_as_default=False)  # type: ignore[no-untyped-call]
        return DaskConnection(new, cluster, owns_client=True)
    except BaseException:
        cluster.close()
        raise
