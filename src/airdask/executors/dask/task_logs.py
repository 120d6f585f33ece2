"""Writing harvested task logs off the thread that harvests them, packed per run
(:mod:`airdask.logs.packs`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from airdask.logs.packs import append_logs
from airdask.state import TaskInstanceKey

log = logging.getLogger(__name__)

#: ``(key, text, kept_on)``: the log of an attempt, and where its full tail is kept when
#: ``text`` is only the pushed end of it (``(worker address, dask key)``), else None.
LogItem = tuple[TaskInstanceKey, str, tuple[str, str] | None]
#: ``fetch(worker, dask keys)``: the tails that worker kept (None for each it has not).
FetchKept = Callable[[str, list[str]], dict[str, str | None]]


class LogWriter:
    """Writes harvested task logs to their runs' packs in ``[logging] base_log_folder`` on
    one background thread, so that a slow disk does not stall ``sync()`` (and with it the
    scheduler loop).

    Logs are queued, not submitted to a pool one by one: at hundreds of attempts a second,
    a future and a pool hand-off per log cost more than the write itself. A log whose tail
    its worker kept is taken from that worker here too (``fetch``), one request per worker
    and batch."""

    def __init__(self, folder: str, *, fetch: FetchKept | None = None) -> None:
        self.folder = folder
        self.fetch = fetch
        self._cond = threading.Condition()
        self._queue: list[LogItem] = []
        self._pending: dict[TaskInstanceKey, int] = {}  # key -> writes queued for it
        self._thread: threading.Thread | None = None
        self._closing = False

    def submit(self, logs: list[LogItem]) -> None:
        """Queue logs: one hand-off to the writer per harvest, not per log."""
        if not logs:
            return
        with self._cond:
            self._queue.extend(logs)
            for key, _, _ in logs:
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
            texts = self._take_kept(batch)
            try:
                append_logs(
                    self.folder,
                    [(key, text) for (key, _, _), text in zip(batch, texts, strict=True)],
                )
            except Exception:  # the thread must live on, or wait() would hang
                log.exception("could not write %d task log(s) to %s", len(batch), self.folder)
            with self._cond:
                for key, _, _ in batch:
                    left = self._pending[key] - 1
                    if left:
                        self._pending[key] = left
                    else:
                        del self._pending[key]
                self._cond.notify_all()

    def _take_kept(self, batch: list[LogItem]) -> list[str]:
        """Each item's text, the full kept tail where its worker still has it."""
        by_worker: dict[str, list[str]] = {}
        for _, _, kept in batch:
            if kept is not None:
                by_worker.setdefault(kept[0], []).append(kept[1])
        if not by_worker:
            return [text for _, text, _ in batch]
        taken: dict[str, str | None] = {}
        for worker, names in by_worker.items():
            try:
                taken.update(self.fetch(worker, names) if self.fetch else {})
            except Exception:  # the pushed end of the log is still worth writing
                log.exception("could not take %d kept log(s) from %s", len(names), worker)
        texts = []
        for _, text, kept in batch:
            full = taken.get(kept[1]) if kept is not None else text
            if full is None and kept is not None:
                full = f"[airdask] only the end of this log survived (worker {kept[0]} " \
                       f"no longer has the rest)\n{text}"  # fmt: skip
            texts.append(full if full is not None else text)
        return texts

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
