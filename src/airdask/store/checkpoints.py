"""SQLite's WAL checkpoints on a thread of their own, for a process that commits every pass.

In WAL mode SQLite appends each commit's pages to the ``-wal`` file and copies them back into
the database (a checkpoint) in the commit that takes the WAL past ``wal_autocheckpoint``
pages, 1,000 by default: that commit also pays for the copy and its fsyncs. In a scheduler
that is one pass in a few, taken by the loop's thread, which is what every attempt waits on
(measured: a pass of 512 attempts with 100,000 task instances in the database spent 20 ms of
its 100 ms in that checkpoint, 3 ms in its three commits without it).

A :class:`Checkpointer` turns the automatic checkpoint off on its engine's connections and
runs a ``PASSIVE`` checkpoint from a connection of its own every ``interval`` seconds
instead. ``PASSIVE`` never waits for readers or writers (it copies what no reader still
needs; the rest waits for the next one), and Python's ``sqlite3`` releases the GIL while
SQLite works, so the loop goes on meanwhile. Other processes on the same file (the CLI, a
notebook) keep the automatic checkpoint: they write little.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import weakref
from typing import Any

from sqlalchemy import Engine, event

log = logging.getLogger(__name__)

#: Seconds between two checkpoints of a :class:`Checkpointer`.
CHECKPOINT_SECONDS = 1.0
#: SQLite's own default ``wal_autocheckpoint``, put back when a Checkpointer stops.
AUTOCHECKPOINT_PAGES = 1000
_INFO_KEY = "airdask_wal_autocheckpoint"


class _AutoCheckpoint:
    """What ``wal_autocheckpoint`` one engine's connections should have: 0 while any
    Checkpointer of the engine runs, SQLite's default otherwise. One checkout listener per
    engine, however many Checkpointers come and go on it (a scheduler each), sets it on a
    connection whose value differs: a PRAGMA only when the wanted value changed."""

    def __init__(self) -> None:
        self.running = 0

    def on_checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        pages = 0 if self.running else AUTOCHECKPOINT_PAGES
        if record.info.get(_INFO_KEY, AUTOCHECKPOINT_PAGES) != pages:
            dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={pages}")
            record.info[_INFO_KEY] = pages


_BY_ENGINE: weakref.WeakKeyDictionary[Engine, _AutoCheckpoint] = weakref.WeakKeyDictionary()
_BY_ENGINE_LOCK = threading.Lock()


def _count_running(engine: Engine, delta: int) -> None:
    """One more (``delta`` 1) or one fewer (-1) Checkpointer running on ``engine``."""
    with _BY_ENGINE_LOCK:
        found = _BY_ENGINE.get(engine)
        if found is None:
            found = _BY_ENGINE[engine] = _AutoCheckpoint()
            event.listen(engine, "checkout", found.on_checkout)
        found.running += delta


class Checkpointer:
    """Checkpoints of ``engine``'s SQLite database on a thread (a no-op on other databases
    and on an in-memory SQLite).

    :param interval: seconds between two checkpoints.
    """

    def __init__(self, engine: Engine, *, interval: float = CHECKPOINT_SECONDS) -> None:
        self.engine = engine
        self.interval = float(interval)
        database = engine.url.database
        self.path = (
            database
            if engine.dialect.name == "sqlite" and database and database != ":memory:"
            else None
        )
        #: ``(busy, WAL pages, pages checkpointed)`` of the latest checkpoint, as SQLite's
        #: ``PRAGMA wal_checkpoint`` returns it.
        self.last: tuple[int, int, int] | None = None
        #: Set after each checkpoint (tests wait on it).
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Turn the automatic checkpoint off on the engine's connections (as each is next
        checked out) and start the thread."""
        if self.path is None or self._thread is not None:
            return
        _count_running(self.engine, 1)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="airdask-sqlite-checkpoints", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread after one last checkpoint; the connections get SQLite's automatic
        checkpoint back as each is next checked out."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join()
        _count_running(self.engine, -1)

    def _run(self) -> None:
        assert self.path is not None
        connection = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        try:
            while not self._stop.wait(self.interval):
                self._checkpoint(connection)
            self._checkpoint(connection)
        finally:
            connection.close()

    def _checkpoint(self, connection: sqlite3.Connection) -> None:
        try:
            row = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # a locked or vanished file: the next one tries again
            log.debug("checkpoint of %s failed: %s", self.path, exc)
            return
        self.last = (int(row[0]), int(row[1]), int(row[2]))
        self.done.set()


__all__ = ["Checkpointer"]
