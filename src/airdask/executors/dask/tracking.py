"""What DaskExecutor holds per attempt in flight: its TI key, its future, its worker.

Started and finished events arrive on Dask's event loop (``subscribe_topic``); the handlers
only push them onto thread-safe queues that ``sync()`` drains. A finished event carries the
runner's outcome (or the keeper's, for what the runner could not report): it is how every
attempt's outcome arrives, with no round trip (ADR 0003). The future of an attempt is kept
only for errors Dask reports to the submitting client alone.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from airdask.executors.common import drain_queue
from airdask.state import TaskInstanceKey

log = logging.getLogger(__name__)


class Tracker:
    def __init__(self) -> None:
        self._keys: dict[str, TaskInstanceKey] = {}
        self._futures: dict[str, Any] = {}
        self._workers: dict[str, str] = {}
        self._started: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._finished: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, name: str, key: TaskInstanceKey, future: Any | None) -> None:
        """Track an attempt; ``future`` is None for an adopted one."""
        self._keys[name] = key
        if future is not None:
            self._futures[name] = future

    def ti_key(self, name: str) -> TaskInstanceKey | None:
        return self._keys.get(name)

    def future(self, name: str) -> Any | None:
        return self._futures.get(name)

    def worker_of(self, name: str) -> str | None:
        return self._workers.get(name)

    def names(self) -> list[str]:
        return list(self._keys)

    def forget(self, name: str) -> TaskInstanceKey | None:
        """Drop every reference to the attempt (releasing its future) and return its key."""
        self._workers.pop(name, None)
        future = self._futures.pop(name, None)
        if future is not None:
            with contextlib.suppress(Exception):  # already released, or the client closed
                future.release()
        return self._keys.pop(name, None)

    def drop_future(self, name: str) -> None:
        """Release the future of an attempt that stays tracked (its outcome comes as an
        event; the future was cancelled when the client lost its scheduler)."""
        future = self._futures.pop(name, None)
        if future is not None:
            with contextlib.suppress(Exception):
                future.release()

    def on_started(self, event: Any) -> None:
        """``subscribe_topic`` handler: ``event`` is ``(timestamp, message)``."""
        _put_event(self._started, event)

    def on_finished(self, event: Any) -> None:
        """``subscribe_topic`` handler for the runner's pushed outcomes."""
        _put_event(self._finished, event)

    def drain_finished(self) -> list[tuple[str, dict[str, Any]]]:
        """The outcomes of our attempts that arrived, first one per attempt; the rest are
        dropped (every executor on the cluster sees these events, so they are drained even
        while ours are idle)."""
        return self._ours(drain_queue(self._finished))

    def wait_finished(self, timeout: float) -> list[tuple[str, dict[str, Any]]]:
        """Like :meth:`drain_finished`, blocking up to ``timeout`` for the first event."""
        try:
            first = self._finished.get(timeout=timeout)
        except queue.Empty:
            return []
        return self._ours([first, *drain_queue(self._finished)])

    def _ours(self, events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        found: dict[str, dict[str, Any]] = {}
        for name, message in events:
            if name in self._keys and name not in found:
                found[name] = message
        return list(found.items())

    def drain_started(self) -> list[tuple[str, dict[str, Any]]]:
        items: list[tuple[str, dict[str, Any]]] = []
        for name, message in drain_queue(self._started):
            if name in self._keys:
                if message.get("worker"):
                    self._workers[name] = str(message["worker"])
                items.append((name, message))
        return items


def _put_event(target: queue.SimpleQueue[tuple[str, dict[str, Any]]], event: Any) -> None:
    message = event[1] if isinstance(event, tuple) and len(event) == 2 else event
    if isinstance(message, dict) and "key" in message:
        target.put((str(message["key"]), message))


# A Dask client keeps one handler per topic: a second executor on the same client (two in
# one notebook, say) would silently take the first one's events, and the first to stop
# would unsubscribe both. So handlers are fanned out per (client, topic).
class _Fanout:
    def __init__(self) -> None:
        self.handlers: list[Callable[[Any], None]] = []

    def __call__(self, event: Any) -> None:
        for each in list(self.handlers):
            each(event)


_fanout: weakref.WeakKeyDictionary[Any, dict[str, _Fanout]] = weakref.WeakKeyDictionary()
_fanout_lock = threading.Lock()


def subscribe(client: Any, topic: str, handler: Callable[[Any], None]) -> None:
    """Have ``client`` call ``handler`` with every event of ``topic`` (once, however often
    this is called)."""
    with _fanout_lock:
        topics = _fanout.setdefault(client, {})
        fanout = topics.get(topic)
        if fanout is None:
            fanout = topics[topic] = _Fanout()
            client.subscribe_topic(topic, fanout)
        if handler not in fanout.handlers:
            fanout.handlers.append(handler)


def confirm_subscribed(client: Any, topics: list[str], *, timeout: float) -> bool:
    """Wait until the Dask scheduler has taken ``client``'s subscriptions to ``topics``.

    They travel on the client's batched stream, and a request on another connection (the
    lookup that adopts a dead executor's attempts, say) can overtake them: an attempt
    adopted then could finish before the scheduler sends its outcome to this client, and
    nothing would harvest it. True once confirmed, or when the scheduler cannot say (an
    older keeper); False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done = client.sync(client.scheduler.airdask_subscribed, topics=topics,
                               subscriber=client.id)  # fmt: skip
        except Exception as exc:  # a keeper without the question: it cannot say
            log.debug("cannot confirm the subscriptions to %s: %s", topics, exc)
            return True
        if done is None or done:
            return True
        if time.monotonic() >= deadline:
            log.warning("the Dask scheduler did not take the subscriptions to %s within "
                        "%.0f s", topics, timeout)  # fmt: skip
            return False
        time.sleep(0.01)


def resubscribe(client: Any) -> None:
    """Subscribe ``client`` again to its topics: a Dask scheduler forgets a client's
    subscriptions when it loses the client, and a reconnected client does not renew them."""
    with _fanout_lock:
        topics = dict(_fanout.get(client, {}))
    for topic, fanout in topics.items():
        client.subscribe_topic(topic, fanout)


def unsubscribe(client: Any, topic: str, handler: Callable[[Any], None]) -> None:
    with _fanout_lock:
        topics = _fanout.get(client, {})
        fanout = topics.get(topic)
        if fanout is not None and handler in fanout.handlers:
            fanout.handlers.remove(handler)
        if fanout is not None and not fanout.handlers:
            del topics[topic]
            client.unsubscribe_topic(topic)
