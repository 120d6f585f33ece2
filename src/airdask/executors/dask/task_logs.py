"""Writing harvested task logs off the thread that harvests them."""

from __future__ import annotations

import logging
import os
import threading

from airdask.logs import log_relpath
from airdask.state import TaskInstanceKey

log = logging.getLogger(__name__)


class LogWriter:
    """Writes harvested task logs to ``[logging] base_log_folder`` on one background thread,
    so that a slow disk does not stall ``sync()`` (and with it the scheduler loop).

    Logs are queued, not submitted to a pool one by one: at hundreds of attempts a second,
    a future and a pool hand-off per log cost more than the write itself."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._cond = threading.Condition()
        self._queue: list[tuple[TaskInstanceKey, str]] = []
        self._pending: dict[TaskInstanceKey, int] = {}  # key -> writes queued for it
        self._thread: threading.Thread | None = None
        self._closing = False

    def submit(self, logs: list[tuple[TaskInstanceKey, str]]) -> None:
        """Queue ``(key, text)`` logs: one hand-off to the writer per harvest, not per log."""
        if not logs:
            return
        with self._cond:
            self._queue.extend(logs)
            for key, _ in logs:
                self._pending[key] = self._pending.get(key, 0) + 1
            if self._thread is None:
                self._closing = False
                self._thread = threading.Thread(
                    target=self._run, name="airdask-task-logs", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                batch, self._queue = self._queue, []
                if not batch:  # closing, and nothing left
                    return
            for key, text in batch:
                try:
                    self._write(key, text)
                except Exception:  # the thread must live on, or wait() would hang
                    log.exception("could not write the log of %s", key)
            with self._cond:
                for key, _ in batch:
                    left = self._pending[key] - 1
                    if left:
                        self._pending[key] = left
                    else:
                        del self._pending[key]
                self._cond.notify_all()

    def _write(self, key: TaskInstanceKey, text: str) -> None:
        path = os.path.join(self.folder, log_relpath(key))
        data = text.encode("utf-8", errors="replace")
        try:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            except FileNotFoundError:  # the first log in this folder
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("could not write the log of %s: %s", key, exc)

    def wait(self, key: TaskInstanceKey) -> None:
        """Return once the log of ``key`` (if one is being written) is on disk."""
        with self._cond:
            while key in self._pending:
                self._cond.wait()

    def close(self) -> None:
        """Write everything still pending, then stop the thread."""
        with self._cond:
            thread, self._thread = self._thread, None
            self._closing = True
            self._cond.notify_all()
        if thread is not None:
            thread.join()
