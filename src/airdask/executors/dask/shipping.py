"""Getting airdask's worker-side functions onto workers that may not have airdask installed.

Dask serialises a task with plain ``pickle`` first, which would send an importable function
by reference (and a worker without airdask could not load it). So each function (with
``airdask.runner``, registered with ``register_pickle_by_value``) is cloudpickled once, here,
into a compressed *blob* named by its digest; a process that loads it keeps it in the module
``_airdask_shipped`` for its lifetime. Two ways for a task to name it:

* :func:`reference`: a module-level function of ``_airdask_shipped``, pickled by reference
  (~60 bytes). It needs the module on the scheduler (which unpickles every task) and on the
  workers: :func:`install` registers a scheduler plugin and a worker plugin for that (Dask
  runs worker plugins on every worker, present and future, before it gets any task). A
  worker that lost the function fetches the blob from the scheduler's metadata, where
  :func:`install` also records it;
* :func:`shipped`: a loader that carries the blob itself, for calls that run rarely
  (``client.run`` of the kill and live-log functions).

:func:`install` also installs the keeper (:mod:`.keeper`, ADR 0003); the worker plugin
sends each outcome when Dask stores the task's result, and kills an attempt's process group
when Dask lets go of the task while it runs, or when its worker closes.

Measured on 2 process workers: shipping the function itself made the scheduler re-pickle the
whole runner module for every task (~0.4 ms) and each worker unpickle it (~0.2 ms); with the
blob in every task the scheduler still spent a tenth of its time pickling, and failed twice
with plain pickle before cloudpickle.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import zlib
from collections.abc import Callable
from typing import Any

from airdask.executors.dask import keeper
from airdask.runner import FINISHED_TOPIC, SHIPPED_MODULE, kill_all, kill_task

log = logging.getLogger(__name__)
#: Bumped when what the worker plugin tells the keeper changes (2: ``airdask-executing``).
PLUGIN_PROTOCOL = "2"

#: Scheduler metadata key under which blobs are kept: ``[METADATA_KEY, digest]``.
METADATA_KEY = "airdask-shipped"


class ShippingError(RuntimeError):
    """The cluster refused airdask's plugins; the message says which and why."""


def _make_loaders() -> tuple[Callable[..., Any], Callable[..., Any]]:
    # Local functions: plain pickle refuses them, so Dask ships them (only they) by value,
    # with the values of the module constants they use.
    def cached(digest: str, blob: bytes | None) -> Any:
        import pickle
        import sys
        import types
        import zlib

        cache: Any = sys.modules.get(SHIPPED_MODULE)
        if cache is None:
            import importlib.machinery

            fresh = types.ModuleType(SHIPPED_MODULE)
            # A spec makes the module importable in cloudpickle's eyes: its functions
            # then pickle by reference instead of by value.
            fresh.__spec__ = importlib.machinery.ModuleSpec(SHIPPED_MODULE, None)
            fresh.functions = {}  # type: ignore[attr-defined]
            cache = sys.modules.setdefault(SHIPPED_MODULE, fresh)
        func = cache.functions.get(digest)
        if func is None:
            loaded = pickle.loads(zlib.decompress(blob if blob is not None else fetch(digest)))
            func = cache.functions.setdefault(digest, loaded)
        name = "run_" + digest[:32]
        if not hasattr(cache, name):  # what tasks name by reference (see reference())

            def entry(*args: Any, **kwargs: Any) -> Any:
                func = cache.functions.get(digest)
                if func is None:  # the cache was cleared: fetch the blob again
                    func = cached(digest, fetch(digest))
                return func(*args, **kwargs)

            entry.__module__ = SHIPPED_MODULE
            entry.__name__ = entry.__qualname__ = name
            setattr(cache, name, entry)
        return func

    def fetch(digest: str) -> bytes:
        from distributed import get_worker
        from distributed.utils import sync

        worker = get_worker()
        blob = sync(
            worker.loop, worker.scheduler.get_metadata, keys=[METADATA_KEY, digest],
            default=None,
        )  # fmt: skip
        if blob is None:
            raise RuntimeError(f"airdask function {digest[:12]} is not recorded on the scheduler")
        return bytes(blob)

    def call_cached(digest: str, blob: bytes | None, *args: Any, **kwargs: Any) -> Any:
        return cached(digest, blob)(*args, **kwargs)

    return cached, call_cached


_CACHED, _CALL_CACHED = _make_loaders()


def register_runner() -> None:
    """Have cloudpickle ship airdask's worker-side modules by value."""
    import cloudpickle

    from airdask import runner, supervision

    for module in (runner, supervision, keeper):
        cloudpickle.register_pickle_by_value(module)


def shipped(func: Callable[..., Any]) -> functools.partial[Any]:
    """``func`` as a callable that carries its blob: runs on any worker, installed or not."""
    import cloudpickle

    blob = zlib.compress(cloudpickle.dumps(func), 1)
    return functools.partial(_CALL_CACHED, hashlib.sha256(blob).hexdigest(), blob)


def reference(heavy: functools.partial[Any]) -> Callable[..., Any]:
    """The same callable as a module-level function of ``_airdask_shipped``, which pickles
    by reference (~60 bytes, and plain ``pickle`` succeeds at the first try), once
    :func:`install` put the module on the scheduler and the workers."""
    import sys

    digest, blob = heavy.args
    _CACHED(digest, blob)  # here as well: pickling by reference looks the function up
    return getattr(sys.modules[SHIPPED_MODULE], "run_" + digest[:32])  # type: ignore[no-any-return]


def _make_plugins(blobs: dict[str, bytes]) -> tuple[Any, Any]:
    """The worker plugin and the scheduler plugin that put ``blobs`` in place."""
    return _worker_plugin(blobs), _scheduler_plugin(blobs)


def _worker_plugin(blobs: dict[str, bytes]) -> Any:
    from distributed.diagnostics.plugin import WorkerPlugin

    cached = _CACHED
    began = _began_reporter()

    class AirdaskShipped(WorkerPlugin):  # local: shipped by value like the loaders
        idempotent = True  # the name carries the digests: same name, same functions

        def __init__(self, blobs: dict[str, bytes]) -> None:
            self.blobs = blobs

        def setup(self, worker: Any) -> None:
            import sys

            for digest, blob in self.blobs.items():
                cached(digest, blob)
            self.worker = worker
            # the runner leaves small outcomes here for transition() to send
            self.finished = sys.modules[SHIPPED_MODULE].__dict__.setdefault("finished", {})

        def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
            if finish == "executing":
                began(self.worker, key)
            elif start == "executing":
                self._left(key, finish)
            elif finish == "forgotten":  # a cancelled attempt's late outcome
                self.finished.pop(key, None)

        def _left(self, key: Any, finish: str) -> None:
            outcome = self.finished.pop(key, None)
            if finish == "memory" and outcome is not None:
                self.worker.log_event(FINISHED_TOPIC, outcome)
            elif finish in ("cancelled", "released"):
                # Dask let go of an attempt that still runs (it was cancelled, or its
                # submitter is gone): its command must not outlive it.
                kill_task(str(key), "cancelled by Dask")

        def teardown(self, worker: Any) -> None:
            status = getattr(getattr(worker, "status", None), "name", "")
            if status.startswith("clos"):  # the worker closes (lost its scheduler, say)
                kill_all("its Dask worker closed")

    return AirdaskShipped(blobs)


def _began_reporter() -> Callable[[Any, Any], None]:
    """``began(worker, key)``: tell the keeper that an airdask attempt began executing, so
    that it counts this worker's death against it (keeper.py). A closure, so that it ships
    by value with the worker plugin."""
    op, annotation = keeper.EXECUTING_OP, keeper.ANNOTATION

    def began(worker: Any, key: Any) -> None:
        ts = worker.state.tasks.get(key)
        if annotation in (getattr(ts, "annotations", None) or ()):
            with contextlib.suppress(Exception):  # a closed stream: the worker is going
                worker.batched_send({"op": op, "key": key})

    return began


def _scheduler_plugin(blobs: dict[str, bytes]) -> Any:
    from distributed.diagnostics.plugin import SchedulerPlugin

    cached = _CACHED

    class AirdaskShippedOnScheduler(SchedulerPlugin):  # local: shipped by value, as above
        idempotent = True

        def __init__(self, blobs: dict[str, bytes]) -> None:
            self.blobs = blobs

        async def start(self, scheduler: Any) -> None:
            for digest, blob in self.blobs.items():
                cached(digest, blob)

    return AirdaskShippedOnScheduler(blobs)


def install(client: Any, functions: list[functools.partial[Any]]) -> None:
    """Put the blobs of ``functions`` (from :func:`shipped`) on every worker, present and
    future, and on the scheduler, and install the keeper; :class:`ShippingError` if the
    cluster refuses any of it (airdask cannot run there: ADR 0003)."""
    blobs = {f.args[0]: f.args[1] for f in functions}
    # The plugins' own protocol is part of the name, as the blobs are: a long-lived cluster
    # that holds an older worker plugin with the same runner installs this one too.
    digest = hashlib.sha256((PLUGIN_PROTOCOL + "".join(sorted(blobs))).encode()).hexdigest()
    name = "airdask-shipped-" + digest
    on_workers, on_scheduler = _make_plugins(blobs)
    steps: list[tuple[str, Callable[[], Any]]] = [
        *(
            ("record the runner on the scheduler",
             functools.partial(client.set_metadata, [METADATA_KEY, digest], blob))
            for digest, blob in blobs.items()
        ),
        ("install the runner on the workers",
         functools.partial(client.register_plugin, on_workers, name=name[:40])),
        ("install the runner on the scheduler",
         functools.partial(client.register_plugin, on_scheduler, name=name[:40])),
        ("install the keeper on the scheduler",
         functools.partial(client.register_plugin, keeper.Keeper(), name=keeper.KEEPER_NAME)),
    ]  # fmt: skip
    for what, step in steps:
        try:
            step()
        except Exception as exc:
            raise ShippingError(
                f"the Dask cluster refused to {what}: {type(exc).__name__}: {exc}"
            ) from exc
