"""What DaskExecutor holds per attempt in flight: its TI key, its future, its worker.

Started and finished events arrive on Dask's event loop (``subscribe_topic``); the handlers
only push them onto thread-safe queues that ``sync()`` drains. A finished event carries the
runner's outcome, so harvesting it needs no round trip to the worker that holds the result.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

from airdask.executors.common import drain_queue
from airdask.state import TaskInstanceKey


class Tracker:
    def __init__(self) -> None:
        self._keys: dict[str, TaskInstanceKey] = {}
        self._futures: dict[str, Any] = {}
        self._workers: dict[str, str] = {}
        self._started: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._finished: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._outcomes: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, name: str, key: TaskInstanceKey, future: Any) -> None:
        self._keys[name] = key
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
        self._outcomes.pop(name, None)
        future = self._futures.pop(name, None)
        if future is not None:
            with contextlib.suppress(Exception):  # already released, or the client closed
                future.release()
        return self._keys.pop(name, None)

    def on_started(self, event: Any) -> None:
        """``subscribe_topic`` handler: ``event`` is ``(timestamp, message)``."""
        _put_event(self._started, event)

    def on_finished(self, event: Any) -> None:
        """``subscribe_topic`` handler for the runner's pushed outcomes."""
        _put_event(self._finished, event)

    def drain_finished(self) -> None:
        """Keep the pushed outcomes of our attempts; drop the rest (every executor on the
        cluster sees these events, so they must be drained even while ours are idle)."""
        for name, message in drain_queue(self._finished):
            if name in self._keys:
                self._outcomes[name] = message

    def pushed_outcome(self, name: str) -> dict[str, Any] | None:
        """The outcome the runner pushed for ``name``, if it arrived (else gather it)."""
        return self._outcomes.get(name)

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
_fanout: weakref.WeakKeyDictionary[Any, dict[str, list[Callable[[Any], None]]]] = (
    weakref.WeakKeyDictionary()
)
_fanout_lock = threading.Lock()


def subscribe(client: Any, topic: str, handler: Callable[[Any], None]) -> None:
    with _fanout_lock:
        topics = _fanout.setdefault(client, {})
        handlers = topics.get(topic)
        if handlers is None:
            handlers = topics[topic] = []

            def dispatch(event: Any, handlers: list[Callable[[Any], None]] = handlers) -> None:
                for each in list(handlers):
                    each(event)

            client.subscribe_topic(topic, dispatch)
        handlers.append(handler)


def unsubscribe(client: Any, topic: str, handler: Callable[[Any], None]) -> None:
    with _fanout_lock:
        topics = _fanout.get(client, {})
        handlers = topics.get(topic, [])
        if handler in handlers:
            handlers.remove(handler)
        if not handlers and topic in topics:
            del topics[topic]
            client.unsubscribe_topic(topic)
