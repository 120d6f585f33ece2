"""Database errors worth waiting out, and the backoff between tries.

A PostgreSQL restart, a failover, a dropped connection, a deadlock between two schedulers or
a busy SQLite file are *transient*: the same statement works a moment later, so the
scheduler waits and tries again instead of stopping (and leaving its runs without an owner).
A missing table, a constraint violation or a syntax error is not: it would fail forever.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

#: SQLite says "locked"/"busy" when another process holds the write lock longer than the
#: busy timeout; its other OperationalErrors ("no such table", "disk I/O error") persist.
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "busy")


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is a database error that retrying later can cure."""
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    if not isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return False
    if type(error.orig).__module__.startswith("sqlite3"):
        text = str(error.orig).lower()
        return any(part in text for part in _SQLITE_TRANSIENT)
    # PostgreSQL: refused or cut connections, shutdown/starting up, deadlock and
    # serialization failures, cancelled statements — all cleared by trying again.
    return True


def describe(error: BaseException) -> str:
    """One line about a database error: the driver's first line, no SQL, no link."""
    orig = getattr(error, "orig", None) or error
    first = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {first[0] if first else ''}".strip()


class Backoff:
    """Delays that double from ``first`` to at most ``most`` seconds; :meth:`reset` after a
    success."""

    def __init__(self, *, first: float = 0.1, most: float = 5.0) -> None:
        if first <= 0 or most < first:
            raise ValueError(f"backoff needs 0 < first <= most, got {first} and {most}")
        self.first, self.most = first, most
        self.tries = 0
        self._delay = first

    def next(self) -> float:
        """The delay before the next try (and count the try)."""
        delay = self._delay
        self._delay = min(self._delay * 2, self.most)
        self.tries += 1
        return delay

    def reset(self) -> None:
        self.tries = 0
        self._delay = self.first
