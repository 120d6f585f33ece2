"""What the airdask dashboard page shows, built from the metadata DB and handed to Dask.

This is the scheduler's side (SQLAlchemy, the models); the Dask side reads the published
summary through :mod:`airdask.dashboard.published`, which imports neither.

The scheduler process (the only one with DB credentials) builds a plain, JSON-serialisable
summary with :func:`build_summary` and stores it on the Dask scheduler with
:func:`publish_summary` (``Client.set_metadata(["airdask", "summary"], ...)``). The page in the
Dask scheduler process only reads that metadata: the Dask side needs no database access.

Summary layout (version 1)::

    {
      "version": 1,
      "generated_at": "2026-11-23T21:00:00.123456+00:00",   # ISO 8601, UTC
      "seq": 17,                # increases with every publication by the same publisher
      "pools": [{"name", "slots", "running", "queued", "open", "description"}, ...],
      "states": {"success": 12, "running": 2, "none": 3, ...},  # task instances by state
      "runs": {"running": 1, "success": 4, ...},                 # DAG runs by state
      "events": [{"id", "dttm", "event", "dag_id", "task_id", "run_id", "try_number",
                  "reason"}, ...],                             # newest first
      "live": [{"dag_id", "task_id", "run_id", "try_number", "state", "executor", "pool",
                "hostname", "queued_at"}, ...],  # queued/running TIs, newest queued first
    }

``live`` (added in version 1 without a bump: readers ignore keys they do not know) shows
which executor each task instance in flight was queued on (``[core] executor`` may list
several).

Event reasons are masked (:func:`airdask.masking.redact`): the page is open to anyone who can
open the Dask dashboard.

Cost: pools and events are bounded by the pools table and ``max_events`` (primary-key
order); ``running``/``queued`` (:func:`airdask.store.queries.pool_usage`) use the state
index and touch only live task instances; ``live`` at most ``max_live``; the counts by
state are ``GROUP BY state``
answered from the ``ix_ti_ready`` index alone (state is its first column).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from airdask.dashboard.published import METADATA_KEY as METADATA_KEY
from airdask.dashboard.published import SUMMARY_VERSION as SUMMARY_VERSION
from airdask.dashboard.published import read_summary as read_summary
from airdask.masking import redact
from airdask.state import LIVE_VALUES
from airdask.store.models import DagRun, Log, TaskInstance, utcnow
from airdask.store.queries import pool_usage

log = logging.getLogger(__name__)

#: A reason longer than this is cut (the page is an overview; the Log table has it all).
MAX_REASON_CHARS = 500


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _pools(session: Session) -> list[dict[str, Any]]:
    return [
        {
            "name": usage.name,
            "slots": usage.slots,
            "running": usage.running,
            "queued": usage.queued,
            "open": usage.open,
            "description": usage.description,
        }
        for usage in pool_usage(session).values()
    ]


def _events(session: Session, max_events: int) -> list[dict[str, Any]]:
    rows = session.scalars(select(Log).order_by(Log.id.desc()).limit(max_events))
    events = []
    for row in rows:
        # Reasons quote errors, which may quote a URL with its password: the page is served
        # to anyone who can open the Dask dashboard.
        reason = redact(row.extra or "")
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 1] + "…"
        events.append(
            {
                "id": int(row.id),
                "dttm": _iso(row.dttm),
                "event": row.event,
                "dag_id": row.dag_id,
                "task_id": row.task_id,
                "run_id": row.run_id,
                "try_number": row.try_number,
                "reason": reason,
            }
        )
    return events


def _live(session: Session, max_live: int) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(TaskInstance)
        .where(TaskInstance.state.in_(LIVE_VALUES))
        .order_by(TaskInstance.queued_dttm.desc(), TaskInstance.task_id)
        .limit(max_live)
    )
    return [
        {
            "dag_id": ti.dag_id,
            "task_id": ti.task_id,
            "run_id": ti.run_id,
            "try_number": int(ti.try_number),
            "state": ti.state,
            "executor": ti.executor or "",
            "pool": ti.pool,
            "hostname": ti.hostname or "",
            "queued_at": _iso(ti.queued_dttm),
        }
        for ti in rows
    ]


def build_summary(session: Session, *, max_events: int = 50, max_live: int = 50) -> dict[str, Any]:
    """The dashboard summary (layout in the module docstring) from ``session``.

    Plain ``str``/``int``/``None``/``list``/``dict`` values only, so it travels through
    msgpack and JSON (on the Dask side, msgpack gives the lists back as tuples). ``seq`` is
    0 here; :class:`SummaryPublisher` numbers its publications. Raises ``ValueError`` for a
    negative ``max_events``.
    """
    if max_events < 0:
        raise ValueError(f"max_events must be >= 0, got {max_events}")
    states = {
        (str(state) if state is not None else "none"): int(n)
        for state, n in session.execute(
            select(TaskInstance.state, func.count()).group_by(TaskInstance.state)
        )
    }
    runs = {
        str(state): int(n)
        for state, n in session.execute(select(DagRun.state, func.count()).group_by(DagRun.state))
    }
    return {
        "version": SUMMARY_VERSION,
        "generated_at": utcnow().isoformat(),
        "seq": 0,
        "pools": _pools(session),
        "states": states,
        "runs": runs,
        "events": _events(session, max_events) if max_events else [],
        "live": _live(session, max_live) if max_live > 0 else [],
    }


def publish_summary(client: Any, summary: dict[str, Any]) -> None:
    """Store ``summary`` on the Dask scheduler of ``client`` (a synchronous
    ``distributed.Client``) under :data:`METADATA_KEY`; the page reads it from there.

    Raises whatever ``Client.set_metadata`` raises (e.g. ``OSError`` when the scheduler is
    gone); :class:`SummaryPublisher` is the variant that never raises.
    """
    client.set_metadata(list(METADATA_KEY), summary)


def dask_client_of(executor: Any) -> Any | None:
    """The ``distributed.Client`` an executor runs on, or None: its ``client`` (DaskExecutor,
    once started), else that of one of its ``children`` (LocalDaskExecutor). Duck-typed, so
    the dashboard imports no executor."""
    try:
        client = executor.client
    except (AttributeError, RuntimeError):  # no Dask, or not started yet
        client = None
    if client is not None:
        return client
    for child in getattr(executor, "children", ()):
        found = dask_client_of(child)
        if found is not None:
            return found
    return None


class _ClientDown(ConnectionError):
    """The Dask client is not connected: an outage the executor reports, not a fault here."""


class SummaryPublisher:
    """Publishes a fresh summary at most every ``interval`` seconds; for a scheduler loop.

    Call :meth:`maybe_publish` on every pass: it returns at once while the interval has not
    elapsed, and otherwise builds a summary in a session of its own and publishes it. A
    failure (DB hiccup, Dask scheduler unreachable) is logged and never raised: the page is
    a view, it must not stop the scheduler. ``clock`` is for tests.
    """

    def __init__(
        self,
        *,
        interval: float = 2.0,
        max_events: int = 50,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval < 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval}")
        self.interval = float(interval)
        self.max_events = max_events
        self.seq = 0
        self._clock = clock
        self._last: float | None = None
        self._failing = False
        self._lock = threading.Lock()

    def maybe_publish(
        self, session_factory: Callable[[], Any], client: Any, *, force: bool = False
    ) -> bool:
        """Publish if due (or ``force``); True if a summary was published.

        ``session_factory`` is a context manager factory such as ``Store.session``;
        ``client`` a synchronous ``distributed.Client`` or None (nothing to publish to).
        """
        if client is None:
            return False
        now = self._clock()
        with self._lock:
            if not force and self._last is not None and now - self._last < self.interval:
                return False
            self._last = now
            try:
                status = getattr(client, "status", "running")
                if status != "running":  # a round trip to a lost scheduler would stall us
                    raise _ClientDown(f"the Dask client is {status}")
                with session_factory() as session:
                    summary = build_summary(session, max_events=self.max_events)
                summary["seq"] = self.seq + 1
                publish_summary(client, summary)
            except Exception as exc:
                # Logged once per streak of failures: a dead cluster would flood the log.
                # A lost scheduler is said in a line; only the unexpected get their stack.
                if not self._failing:
                    log.warning(
                        "cannot publish the dashboard summary: %s",
                        exc,
                        exc_info=not isinstance(exc, _ClientDown),
                    )
                self._failing = True
                return False
            self.seq += 1
            if self._failing:
                log.info("dashboard summary published again")
            self._failing = False
            return True
