"""The executor's side of the keeper (:mod:`.keeper`, ADR 0003): acknowledging recorded
outcomes, withdrawing attempts, and finding the attempts a dead executor left behind.

Adoption needs no handle on the old executor's futures: an attempt's Dask key derives from
its task instance key (:func:`airdask.commands.dask_key`), so the keeper is asked about the
key itself. That also covers an attempt submitted by a scheduler that died before it wrote
the attempt's external id. What the keeper still has is either running (the new executor
tracks it and gets its outcome like any other) or finished with its outcome kept (reported
at once). Nothing is adopted from another Dask scheduler: its id is part of the external id.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airdask.commands import dask_key

if TYPE_CHECKING:
    from airdask.store.models import TaskInstance

log = logging.getLogger(__name__)

#: Longest wait for the keeper's answer to a request (a wedged Dask scheduler must not
#: hold the scheduler loop, or its stop, for ever).
KEEPER_REQUEST_TIMEOUT = 30.0


class KeeperError(RuntimeError):
    """The keeper could not be asked (the Dask scheduler is unreachable, or lost it)."""


def split_external_id(external_id: str | None) -> tuple[str, str] | None:
    """``(scheduler id, dask key)`` from an external id DaskExecutor wrote, else None."""
    if not external_id or "/" not in external_id:
        return None
    scheduler_id, _, key = external_id.partition("/")
    return (scheduler_id, key) if scheduler_id and key else None


def lookup(client: Any, names: list[str]) -> dict[str, Any]:
    """The keeper's answer per Dask key: ``{"outcome": ...}``, ``{"state": ...}`` or None."""
    if not names:
        return {}
    try:
        return dict(client.sync(client.scheduler.airdask_lookup, keys=names,
                                callback_timeout=KEEPER_REQUEST_TIMEOUT))  # fmt: skip
    except Exception as exc:
        raise KeeperError(f"could not ask the Dask scheduler about {len(names)} attempt(s): "
                          f"{type(exc).__name__}: {exc}") from exc  # fmt: skip


def withdraw(client: Any, names: list[str], reason: str) -> None:
    """Make Dask forget the attempts ``names``: waiting ones never run, running ones have
    their process groups killed by the worker plugin, and no outcome is reported.
    :class:`KeeperError` when that cannot be made sure."""
    if not names:
        return
    try:
        client.sync(client.scheduler.airdask_cancel, keys=names, reason=reason,
                    callback_timeout=KEEPER_REQUEST_TIMEOUT)  # fmt: skip
    except Exception as exc:
        raise KeeperError(f"could not withdraw {len(names)} attempt(s): "
                          f"{type(exc).__name__}: {exc}") from exc  # fmt: skip


def acknowledge(client: Any, names: list[str], *, wait: bool = False) -> None:
    """Tell the keeper these outcomes are recorded (a lost acknowledgement only leaves a
    copy to expire). By default a request whose answer nobody waits for: sent from the
    client's event loop, at most once per ``ACK_INTERVAL`` (see ``DaskExecutor.sync``).
    ``wait``: returning once the keeper has forgotten them, or after
    :data:`KEEPER_REQUEST_TIMEOUT` (for ``end()``, after which the client may close).

    A request, not a message on the client's batched stream: a stream message reaching a
    Dask scheduler without the keeper's handler (restarted, not yet given the keeper)
    would close the client's whole stream, and drop the submissions beside it."""
    if not names:
        return
    keys = list(names)
    if wait:
        try:
            client.sync(client.scheduler.airdask_ack, keys=keys,
                        callback_timeout=KEEPER_REQUEST_TIMEOUT)  # fmt: skip
        except Exception as exc:  # a closed client or a lost scheduler: the copies expire
            log.info("could not acknowledge %d outcome(s): %s", len(keys), exc)
        return

    async def send() -> None:
        try:
            await client.scheduler.airdask_ack(keys=keys)
        except Exception as exc:
            log.info("could not acknowledge %d outcome(s): %s", len(keys), exc)

    try:
        client.loop.add_callback(send)
    except Exception as exc:  # the client's loop is gone: the copies expire
        log.info("could not acknowledge %d outcome(s): %s", len(keys), exc)


@dataclass
class Found:
    """An attempt of ``ti`` that the keeper knows: still in Dask (``outcome`` None), or
    finished with its outcome kept."""

    ti: TaskInstance
    name: str  # its Dask key
    outcome: dict[str, Any] | None


def find_adoptable(
    client: Any, scheduler_id: str | None, tis: Sequence[TaskInstance]
) -> tuple[list[Found], list[TaskInstance]]:
    """The attempts of ``tis`` the keeper of ``client``'s scheduler (id ``scheduler_id``)
    knows, and the task instances it does not. :class:`KeeperError` when it cannot be
    asked: then nothing can be said about any of them."""
    not_adopted: list[TaskInstance] = []
    candidates: dict[str, TaskInstance] = {}
    for ti in tis:
        name = dask_key(ti.key)
        parsed = split_external_id(ti.external_executor_id)
        if parsed is not None and parsed[0] != scheduler_id:
            log.info("not adopting %s: its Dask scheduler %s is gone", ti.key, parsed[0])
            not_adopted.append(ti)
        elif parsed is not None and parsed[1] != name:
            log.warning("not adopting %s: external id %s is another attempt", ti.key, parsed[1])
            not_adopted.append(ti)
        else:
            candidates[name] = ti
    answers = lookup(client, list(candidates))
    found: list[Found] = []
    for name, ti in candidates.items():
        answer = answers.get(name)
        if answer is None:
            not_adopted.append(ti)
        else:
            found.append(Found(ti, name, answer.get("outcome")))
    return found, not_adopted
