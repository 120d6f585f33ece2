"""Knowing when DaskExecutor's futures are done, at a cost that stays flat per attempt.

``Future.add_done_callback`` costs, per future, a wake-up of the client's event loop to start
a coroutine, the coroutine itself, and a hand-off to Dask's callback thread when it ends:
at hundreds of attempts a second that was a tenth of the client process's CPU. Here the
futures of one submission are watched with one call onto the loop, which hooks the event
that Dask's ``FutureState`` sets when the future finishes, errs or is cancelled (the very
event ``add_done_callback`` waits on), so the notification happens inside Dask's own state
change. The hook relies on ``FutureState`` internals; where they differ (another Dask
release) or the event already exists, the future falls back to ``add_done_callback``.

Either way, a done future's Dask key lands on a :class:`DoneQueue` that ``sync()`` drains
(the executor holds the futures): its cost grows with the attempts that finished, never with
those in flight. The hook holds the key only, so it keeps no future alive.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import Callable, Sequence
from typing import Any

from airdask.executors.common import drain_queue

log = logging.getLogger(__name__)


class DoneQueue:
    """Where finished futures are left; drained by ``sync()``."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()

    def put(self, dask_key: str) -> None:
        self._queue.put(dask_key)

    def callback_for(self, dask_key: str) -> Callable[[Any], None]:
        """A ``Future.add_done_callback`` callback that queues ``dask_key``."""
        put = self._queue.put

        def done(_: Any) -> None:
            put(dask_key)

        return done

    def drain(self) -> list[str]:
        return drain_queue(self._queue)

    def wait(self, timeout: float) -> list[str]:
        """Block up to ``timeout`` for one finished future, then take all that are there."""
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return []
        return [first, *self.drain()]


class _HookedEvent(asyncio.Event):
    """The event of one ``FutureState``: queues its key the first time Dask sets it.

    Dask sets it (on the client's loop) when the future finishes, errs or is cancelled,
    including the cancellation of every future when the client loses its scheduler. Like a
    done-callback it fires once: a later ``lose``/``retry`` clears it and a new ``set`` does
    not queue the future again."""

    def __init__(self, done: DoneQueue, dask_key: str) -> None:
        super().__init__()
        self._target: tuple[DoneQueue, str] | None = (done, dask_key)

    def set(self) -> None:
        target, self._target = self._target, None
        super().set()
        if target is not None:
            target[0].put(target[1])


def _hookable() -> bool:
    from distributed.client import FutureState

    slots = getattr(FutureState, "__slots__", ())
    return "_event" in slots and callable(getattr(FutureState, "_get_event", None))


class DoneWatcher:
    """Queues each watched future on ``done`` once it is no longer pending.

    :param hook: use the ``FutureState`` hook where Dask's internals allow it; ``False``
        always uses ``add_done_callback`` (both paths are tested).
    """

    def __init__(self, done: DoneQueue, *, hook: bool = True) -> None:
        self.done = done
        self.hooked = hook and _hookable()

    def watch(self, client: Any, futures: Sequence[tuple[str, Any]]) -> None:
        """Watch ``(dask key, future)`` pairs: one call onto the client's loop for them all."""
        if not futures:
            return
        if not self.hooked:
            for name, future in futures:
                future.add_done_callback(self.done.callback_for(name))
            return
        client.loop.add_callback(self._install, list(futures))

    def _install(self, futures: list[tuple[str, Any]]) -> None:
        # On the client's loop, where Dask changes FutureStates (its report handlers, and
        # releases, which it schedules there too), so a future cannot finish between the
        # check and the hook.
        for name, future in futures:
            try:
                state = getattr(future, "_state", None)
                if state is not None and state.status != "pending":
                    self.done.put(name)
                elif state is not None and state._event is None:
                    state._event = _HookedEvent(self.done, name)
                else:  # not bound yet, or something already waits on it: leave it to Dask
                    future.add_done_callback(self.done.callback_for(name))
            except Exception:  # never lose one: leave it to Dask's own callback
                log.exception("could not hook %s; watching it with a done-callback", name)
                future.add_done_callback(self.done.callback_for(name))
