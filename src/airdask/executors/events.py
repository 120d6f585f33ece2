"""What an executor reports about an attempt: the ``info`` half of an event-buffer entry.

Airflow lets ``info`` be anything; airdask's executors put an :class:`EventInfo` there so the
scheduler can record the reason, the host, the times and the external id. The scheduler also
accepts a plain string (or anything else, via ``str()``) from third-party executors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airdask.runner import OutcomeKind

__all__ = ["EventInfo", "OutcomeKind", "info_from_outcome", "reason_of", "timestamp"]


@dataclass
class EventInfo:
    """An attempt's event. ``kind`` is one of :data:`OutcomeKind`, the vocabulary it shares
    with the runner's outcomes (``connection_lost`` means the outcome is unknown, not that
    the task failed)."""

    reason: str
    kind: OutcomeKind = "success"
    external_executor_id: str | None = None
    hostname: str | None = None
    worker: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_code: int | None = None
    #: A Python callable's return value, encoded (``runner.encode_result``), and its
    #: format ("json" or "pickle"); the scheduler stores it (results travel with the
    #: outcome, so workers need no database: ADR 0009).
    result: bytes | None = None
    result_format: str | None = None

    @property
    def outcome_unknown(self) -> bool:
        """True when the task may or may not have run to its end (e.g. Dask scheduler lost)."""
        return self.kind == "connection_lost"

    def __str__(self) -> str:
        return self.reason


def timestamp(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=timezone.utc)


def info_from_outcome(outcome: Any, *, external_executor_id: str | None = None) -> EventInfo:
    """Build an :class:`EventInfo` from a runner :class:`~airdask.runner.Outcome` dict."""
    return EventInfo(
        reason=outcome["reason"],
        kind=outcome["kind"],
        external_executor_id=external_executor_id,
        hostname=outcome["hostname"],
        worker=outcome.get("worker"),
        started_at=timestamp(outcome["started_at"]),
        ended_at=timestamp(outcome["ended_at"]),
        exit_code=outcome["exit_code"],
        result=outcome.get("result"),
        result_format=outcome.get("result_format"),
    )


def reason_of(info: Any) -> str | None:
    """The human-readable reason carried by any executor's event info."""
    if info is None:
        return None
    return str(info)
