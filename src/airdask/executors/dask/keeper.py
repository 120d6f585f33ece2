"""The keeper: airdask's plugin on the Dask scheduler, which makes an attempt's outcome
outlive the client that submitted it without keeping any finished task wanted.

Why: a finished Dask result that some client (or a published dataset) still wants is
computed again when the worker holding it dies, and for airdask that is a second run of a
command that already succeeded. So nothing wants an airdask attempt once it has finished:

* when a graph annotated ``airdask`` arrives (:meth:`Keeper.update_graph`, before the
  scheduler acts on it), its keys are wanted by Dask's ``fire-and-forget`` pseudo-client
  instead of the submitting client. They run even if that client dies, and Dask forgets
  each one the moment it finishes or errs: there is never a result to recompute.
* the outcome travels as data instead: the runner pushes it on ``runner.FINISHED_TOPIC``
  (to every subscribed client), and the keeper keeps a copy until the executor
  acknowledges it (``airdask_ack``), which it does only once the outcome is recorded. An
  executor that dies before that leaves the copy here for the next one to adopt
  (``airdask_lookup``). Copies nobody acknowledges expire (``ttl``, ``max_kept``).
* what the runner cannot report, the keeper does on the same topic: a task that erred in
  Dask (``KilledWorker`` after worker deaths, a task graph that could not be loaded) or
  that Dask dropped before it finished.
* airdask's attempts skip Dask's queue of root-ish tasks: each goes to a worker as soon as
  it arrives, so a worker starts its next attempt without a round trip to the scheduler
  (ADR 0015). Dask counts a worker's death against every task assigned to that worker,
  started or not; the keeper takes the count back for an attempt that never began executing
  there (the worker plugin says when one begins, ``airdask-executing``), at most
  ``FORGIVEN_DEATHS`` times, so a waiting attempt is not failed with ``KilledWorker`` for
  its neighbours' deaths.

Stdlib and ``distributed`` only, and shipped by value like :mod:`airdask.runner`: the
Dask scheduler need not have airdask installed.
"""

from __future__ import annotations

import pickle
import time
from collections import OrderedDict
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from airdask.runner import FINISHED_TOPIC, OutcomeKind

#: The plugin's name on the scheduler (bumped when its protocol changes; see
#: :meth:`Keeper.start` for what becomes of an older keeper).
KEEPER_PREFIX = "airdask-keeper-"
KEEPER_NAME = KEEPER_PREFIX + "3"
#: The annotation that marks a graph as airdask's (its value names the submitter).
ANNOTATION = "airdask"
#: Present on a graph whose attempts wait in Dask's queue (``[dask] dispatch = queue``).
QUEUE_ANNOTATION = "airdask_queue"
#: A finished attempt whose pushed outcome has not arrived this long after Dask learnt it
#: finished is reported as finished without an outcome.
LATE_OUTCOME_SECONDS = 5.0
#: The worker plugin's message when an attempt begins executing (a scheduler stream op).
EXECUTING_OP = "airdask-executing"
#: Most worker deaths taken back for one attempt that was assigned to the dying worker but
#: had not said it began there. Bounded because the message can be lost with a worker that
#: dies within milliseconds of starting an attempt: a task that kills its worker at once is
#: then failed with ``KilledWorker`` after ``allowed_failures + 1 + FORGIVEN_DEATHS`` deaths.
FORGIVEN_DEATHS = 3


def synthetic_outcome(
    key: str, kind: OutcomeKind, reason: str, worker: str | None
) -> dict[str, Any]:
    """An outcome in the runner's shape, for what the runner could not report itself."""
    now = time.time()
    return {
        "key": key,
        "state": "failed",
        "kind": kind,
        "reason": reason,
        "exit_code": None,
        "hostname": "",
        "worker": worker,
        "pid": 0,
        "started_at": now,
        "ended_at": now,
        "log_path": "",
        "log": None,
        "log_kept": False,
    }


def erred_outcome(key: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The outcome of an attempt that erred in Dask (the runner never raises)."""
    worker = kwargs.get("worker")
    text = kwargs.get("exception_text")
    exc: Any = None
    raw = kwargs.get("exception")
    if isinstance(raw, bytes):
        try:
            exc = pickle.loads(raw)
        except Exception:  # not ours to interpret: fall back to the text
            exc = None
    if exc is not None and type(exc).__name__ == "KilledWorker":
        reason = f"worker died while running the task (KilledWorker): {exc}"
        return synthetic_outcome(key, "worker_died", reason, worker)
    if exc is not None:
        text = f"{type(exc).__name__}: {exc}"
    return synthetic_outcome(key, "error", f"dask error: {text or 'unknown error'}", worker)


class _HoldsNothing(OrderedDict[str, Any]):
    """What a superseded keeper keeps its attempts and copies in (see
    :meth:`Keeper._take_over_older`): nothing it is given stays, so it keeps no copy and,
    knowing no attempt, reports none."""

    def __setitem__(self, key: str, value: Any) -> None:
        return


class Keeper(SchedulerPlugin):
    """See the module docstring. ``ttl`` seconds and ``max_kept`` copies bound what is kept
    for executors that never come back."""

    idempotent = True
    name = KEEPER_NAME

    def __init__(self, *, ttl: float = 86400.0, max_kept: int = 100_000) -> None:
        self.ttl = ttl
        self.max_kept = max_kept
        self.live: dict[str, str] = {}  # key -> submitting client, until forgotten
        self.kept: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self.silent: set[str] = set()  # cancelled by airdask: no outcome to report
        self.executing: set[str] = set()  # began executing on the worker processing it
        self.counted: dict[str, int] = {}  # key -> Dask's death count the keeper let stand
        self.forgiven: dict[str, int] = {}  # key -> deaths taken back
        self.deaths_taken_back = 0  # in all, since the keeper started (for the curious)
        self.scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self._take_over_older(scheduler)
        scheduler.handlers.update(
            {
                "airdask_ack": self.ack,
                "airdask_lookup": self.lookup,
                "airdask_cancel": self.cancel,
                "airdask_keeper_info": self.info,
                "airdask_subscribed": self.subscribed,
            }
        )
        scheduler.stream_handlers[EXECUTING_OP] = self.began

    def _take_over_older(self, scheduler: Any) -> None:
        """Take over what the keeper of an older airdask on this long-lived scheduler holds,
        and leave it holding nothing. The handlers below replace its own, so nobody could
        acknowledge or look up its copies any more: as it was, it kept one of every outcome
        (up to ``max_kept``, each with its log tail) and reported Dask's errors twice. It
        stays registered: an older airdask that starts later then finds it (its install is
        a no-op) instead of installing it again and taking the handlers back."""
        for name, old in list(scheduler.plugins.items()):
            if not name.startswith(KEEPER_PREFIX) or name == KEEPER_NAME:
                continue
            self.live.update(getattr(old, "live", {}))
            self.silent.update(getattr(old, "silent", ()))
            for key, copy in getattr(old, "kept", {}).items():
                self.kept.setdefault(key, copy)
            old.live, old.kept, old.silent = _HoldsNothing(), _HoldsNothing(), set()

    # ---- the scheduler's hooks -----------------------------------------------------

    def update_graph(
        self,
        scheduler: Any,
        *,
        client: str,
        keys: Any,
        annotations: dict[str, dict[Any, Any]],
        **kwargs: Any,
    ) -> None:
        ours = annotations.get(ANNOTATION)
        if not ours:
            return
        mine = [key for key in keys if key in ours]
        # With allowed_failures 0 a death is fatal at once, before a count can be taken
        # back: there, attempts wait in Dask's queue as other tasks do.
        assign = getattr(scheduler, "allowed_failures", 0) >= 1
        queued = annotations.get(QUEUE_ANNOTATION) or {}
        tasks = scheduler.tasks
        for key in mine:
            self.live[key] = client
            ts = tasks.get(key)
            if assign and key not in queued and ts is not None and hasattr(ts, "_queueable"):
                ts._queueable = False  # Dask's own shuffle sets it so, for the same reason
        # Before the scheduler acts on the graph: no moment in which only the client
        # wants these keys (it may die any time), nor one in which it wants a result.
        scheduler.client_desires_keys(keys=mine, client="fire-and-forget")
        scheduler.client_releases_keys(keys=mine, client=client, stimulus_id="airdask-keeper")

    def log_event(self, topic: str, msg: Any) -> None:
        if topic == FINISHED_TOPIC and isinstance(msg, dict) and "key" in msg:
            key = str(msg["key"])
            if key not in self.kept:  # the first outcome of an attempt is its outcome
                self._expire()
                self.kept[key] = (time.monotonic(), msg)
                if len(self.kept) > self.max_kept:
                    self.kept.popitem(last=False)

    def transition(
        self, key: Any, start: str, finish: str, *args: Any, stimulus_id: str, **kwargs: Any
    ) -> None:
        if key not in self.live:
            return
        if start == "processing":
            began = key in self.executing
            self.executing.discard(key)
            if finish == "released":
                self._take_back_death(key, began)
        if finish == "erred" and key not in self.kept:
            self._report(erred_outcome(key, kwargs))
        elif finish == "forgotten":
            del self.live[key]
            self.executing.discard(key)
            self.counted.pop(key, None)
            self.forgiven.pop(key, None)
            if key in self.silent:
                self.silent.discard(key)
            elif key in self.kept:
                pass
            elif start == "memory":  # finished, but its outcome has not arrived (yet)
                self.scheduler.loop.call_later(LATE_OUTCOME_SECONDS, self._late, key)
            else:
                reason = f"dropped by Dask before it finished ({stimulus_id})"
                self._report(synthetic_outcome(key, "killed", reason, None))

    def began(self, key: str, worker: str | None = None) -> None:
        """Stream handler: the attempt ``key`` began executing on ``worker``."""
        if key in self.live:
            self.executing.add(key)

    def _take_back_death(self, key: str, began: bool) -> None:
        """Dask released ``key`` from its worker: if that was the worker's death (Dask's
        count of deaths rose) and the attempt had not begun there, undo the count."""
        ts = self.scheduler.tasks.get(key)
        if ts is None or ts.suspicious <= self.counted.get(key, 0):
            return  # released for another reason than a death
        taken = self.forgiven.get(key, 0)
        if began or taken >= FORGIVEN_DEATHS:
            self.counted[key] = ts.suspicious
            return
        self.forgiven[key] = taken + 1
        self.deaths_taken_back += 1
        ts.suspicious -= 1
        ts.prefix.suspicious -= 1

    def _late(self, key: str) -> None:
        if key not in self.kept:
            reason = "finished in Dask, but its outcome never arrived (outcome unknown)"
            self._report(synthetic_outcome(key, "connection_lost", reason, None))

    def _report(self, outcome: dict[str, Any]) -> None:
        self.scheduler.log_event(FINISHED_TOPIC, outcome)  # which keeps it (log_event)

    def _expire(self) -> None:
        limit = time.monotonic() - self.ttl
        kept = self.kept
        while kept and next(iter(kept.values()))[0] < limit:
            kept.popitem(last=False)

    # ---- what executors ask ----------------------------------------------------------

    def ack(self, keys: list[str]) -> None:
        """The outcomes of ``keys`` are recorded: forget them."""
        for key in keys:
            self.kept.pop(key, None)

    def subscribed(self, topics: list[str], subscriber: str) -> bool | None:
        """Whether the scheduler sends ``subscriber`` (a client id) the events of every one
        of ``topics``; None where this Dask version does not say (its broker's layout)."""
        found = getattr(getattr(self.scheduler, "_broker", None), "_topics", None)
        if not isinstance(found, dict):
            return None
        return all(subscriber in getattr(found.get(t), "subscribers", ()) for t in topics)

    def lookup(self, keys: list[str]) -> dict[str, Any]:
        """Per key: ``{"outcome": ...}`` if it finished, ``{"state": ...}`` while Dask still
        has it, ``None`` if neither (never submitted, or lost with a worker or client)."""
        found: dict[str, Any] = {}
        for key in keys:
            kept = self.kept.get(key)
            if kept is not None:
                found[key] = {"outcome": kept[1]}
                continue
            ts = self.scheduler.tasks.get(key)
            found[key] = {"state": str(ts.state)} if ts is not None else None
        return found

    def cancel(self, keys: list[str], reason: str) -> None:
        """Withdraw ``keys`` (revoke/terminate): Dask forgets them, the worker plugin kills
        their commands, and no outcome is reported for them."""
        present = [key for key in keys if key in self.scheduler.tasks]
        self.silent.update(key for key in present if key in self.live)
        for key in keys:
            self.kept.pop(key, None)
        if present:
            self.scheduler.stimulus_cancel(
                keys=present, client="fire-and-forget", force=True, reason=reason, msg=reason
            )

    def info(self) -> dict[str, int]:
        return {"live": len(self.live), "kept": len(self.kept)}
