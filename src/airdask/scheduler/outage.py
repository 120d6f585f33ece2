"""Waiting out a database outage: backoff, logging, and what an outage means for the others.

The scheduler's loop hands every transient database error (:mod:`airdask.store.transient`)
to :meth:`Outage.wait_out` and goes on with its next pass; :meth:`Outage.back_online` ends
the outage at the first pass that got through. While and just after an outage, the other
schedulers could not heartbeat either: :meth:`Outage.may_declare_dead` stays false for
``threshold`` seconds after the last failure, so nobody is declared dead for our outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from airdask.store.transient import Backoff, describe, is_transient

log = logging.getLogger(__name__)


class Outage:
    """The state of the database connection as one scheduler sees it.

    :param threshold: ``[scheduler] scheduler_health_check_threshold`` (seconds).
    :param stop: set when the scheduler is asked to stop; it cuts a wait short.
    """

    def __init__(self, *, threshold: float, stop: threading.Event) -> None:
        self.threshold = threshold
        self.stop = stop
        self.backoff = Backoff(first=0.1, most=5.0)
        self.since: float | None = None
        self._no_deaths_until = 0.0

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def may_declare_dead(self) -> bool:
        return time.monotonic() >= self._no_deaths_until

    def wait_out(self, error: BaseException, *, kept: int = 0) -> None:
        """Log a transient error and wait before the next try (a stop cuts it short)."""
        delay = self.backoff.next()
        now = time.monotonic()
        if self.since is None:
            self.since = now
            held = f"; {kept} outcomes kept" if kept else ""
            log.warning(
                "database unavailable (%s)%s; retrying in %.1fs", describe(error), held, delay
            )
        else:
            log.warning(
                "database still unavailable after %.1fs (%s); retry %d in %.1fs",
                now - self.since,
                describe(error),
                self.backoff.tries,
                delay,
            )
        self._no_deaths_until = now + delay + self.threshold
        self.stop.wait(delay)

    def back_online(self) -> bool:
        """End the outage (if there was one); True if there was."""
        if self.since is None:
            return False
        log.warning(
            "database reachable again after %.1fs (%d retries)",
            time.monotonic() - self.since,
            self.backoff.tries,
        )
        self.since = None
        self.backoff.reset()
        return True

    def retry_until_stopped(self, work: Callable[[], None]) -> None:
        """``work()``, tried again after each transient error until it succeeds or a stop
        is requested (then the error is raised)."""
        while True:
            try:
                work()
                return
            except Exception as exc:
                if not is_transient(exc) or self.stop.is_set():
                    raise
                self.wait_out(exc)


def patiently(work: Callable[[], None], *, deadline: float) -> bool:
    """``work()``, tried again after transient errors until ``deadline`` (monotonic);
    whether it succeeded. For a scheduler that is stopping: no stop request cuts it short."""
    backoff = Backoff(first=0.1, most=2.0)
    while True:
        try:
            work()
            return True
        except Exception as exc:
            if not is_transient(exc):
                raise
            if time.monotonic() >= deadline:
                log.error("database unavailable while stopping: %s", describe(exc))
                return False
            time.sleep(backoff.next())
