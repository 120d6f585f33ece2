"""The heartbeat thread: a scheduler's Job row stays fresh while one of its passes is slow.

Another scheduler declares a job dead once its heartbeat is older than ``[scheduler]
scheduler_health_check_threshold`` (:func:`.jobs.mark_dead`) and takes over its task
instances. The loop heartbeats between passes, so on its own a single pass longer than the
threshold (a wide DAG on a machine with a load of 15 on two cores) had a healthy scheduler
declared dead by its peer. This thread writes the heartbeat every ``job_heartbeat_sec``
whatever the pass is doing.

A process that is alive is not always working: the thread writes only while the loop has
reached one of its heartbeat points within :data:`STALL_FACTOR` thresholds
(:meth:`Heartbeats.progress`). A loop stuck longer than that lets its row go stale, and its
work goes to the others as before. The loop keeps its own heartbeat too: it is how it learns
that it was declared dead (and stops).
"""

from __future__ import annotations

import logging
import threading
import time

from airdask.scheduler import jobs
from airdask.store.session import Store

log = logging.getLogger(__name__)

#: A loop that reached no heartbeat point for this many health-check thresholds is taken
#: for hung (300 s with the default threshold of 30 s).
STALL_FACTOR = 10.0


class Heartbeats:
    """Writes job ``job_id``'s heartbeat every ``interval`` seconds from a daemon thread
    while the loop shows progress; :meth:`stop` ends it."""

    def __init__(self, store: Store, job_id: int, *, interval: float, threshold: float) -> None:
        self.store = store
        self.job_id = job_id
        self.interval = interval
        self.stall_limit = STALL_FACTOR * threshold
        self._progress = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"airdask-heartbeat-{job_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def progress(self) -> None:
        """The loop is at a heartbeat point (called from the loop's thread)."""
        self._progress = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        # A heartbeat stuck behind a locked SQLite file ends on its own (busy timeout);
        # the thread is a daemon, so stopping never waits longer than this.
        self._thread.join(timeout=max(self.interval, 1.0) * 2)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if time.monotonic() - self._progress > self.stall_limit:
                continue  # hung: the row goes stale, and another scheduler takes over
            try:
                with self.store.session() as session:
                    alive = jobs.heartbeat(session, self.job_id)
            except Exception as exc:  # an outage: the loop waits it out and heartbeats after
                log.debug("heartbeat of job %d not written: %s", self.job_id, exc)
                continue
            if not alive:
                return  # declared dead: the loop's own next heartbeat finds out and stops
