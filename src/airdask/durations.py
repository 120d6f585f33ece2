"""Durations: airdask takes ``float`` seconds or a :class:`~datetime.timedelta` wherever a
user gives one, and works in float seconds inside."""

from __future__ import annotations

from datetime import timedelta

#: A duration as a user may give it.
Duration = float | timedelta


def to_seconds(value: Duration | None) -> float | None:
    """``value`` as float seconds (None stays None). Callers check the sign, since what a
    negative or zero duration means differs (a retry delay may be 0, a timeout not)."""
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
