"""The log of a running Airflow task, read from the Dask worker that runs it.

Airflow asks the executor for a task's log only while the task is running, in the API
server, on an executor that was never started (``FileTaskHandler._read``); what it returns is
merged with what Airflow finds itself (a local file, remote logging, a worker's ``airflow
serve-logs``), and a non-empty answer spares it the ``serve-logs`` request. The task's
supervisor writes that log on its Dask worker, at the path Airflow renders from ``[logging]
base_log_folder`` and ``log_filename_template``; this module connects to the Dask scheduler
(lazily, with a short timeout), asks every worker for that file and returns the first found.

A finished task's log is never asked of an executor: Airflow reads it from a shared log
folder, remote logging or the workers' ``airflow serve-logs``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

#: The most of a log returned (its end, from a line start).
MAX_BYTES = 16 * 1024 * 1024
#: Seconds before connecting again after the Dask scheduler could not be reached.
RETRY_SECONDS = 10.0
#: Seconds the API server waits for the Dask scheduler (at most: [dask] connect_timeout).
CONNECT_SECONDS = 5.0


def read_task_log(path: str, limit: int) -> str | None:
    """Runs on each Dask worker: the file's text (its last ``limit`` bytes), None if absent.

    Shipped by value (the workers need not have airdask), so it imports only the stdlib."""
    import os

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            if size > limit:
                fh.seek(size - limit)
                fh.readline()  # from the first whole line
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return None


class LiveLogReader:
    """Reads running tasks' logs through one Dask client, made on first use and kept.

    :param address: the Dask scheduler's address.
    :param security: a ``distributed.Security`` for ``tls://`` addresses, else None.
    :param connect_timeout: seconds to wait for the scheduler when connecting.
    """

    def __init__(self, address: str, *, security: Any, connect_timeout: float) -> None:
        self.address = address
        self.security = security
        self.connect_timeout = min(connect_timeout, CONNECT_SECONDS)
        self._client: Any | None = None
        self._next_try = 0.0
        self._lock = threading.Lock()  # the API server serves requests on several threads

    def _get_client(self) -> Any | None:
        with self._lock:
            if self._client is not None and self._client.status == "running":
                return self._client
            if time.monotonic() < self._next_try:
                return None
            self._next_try = time.monotonic() + RETRY_SECONDS
            old, self._client = self._client, None
            if old is not None:
                try:
                    old.close()
                except Exception:
                    log.debug("closing a stale Dask client", exc_info=True)
            import cloudpickle

            from airdask.airflow import live_logs
            from airdask.executors.dask.connect import attach_client

            cloudpickle.register_pickle_by_value(live_logs)
            try:
                self._client = attach_client(
                    self.address, security=self.security, timeout=self.connect_timeout
                )
            except Exception as exc:
                log.warning("cannot reach the Dask scheduler at %s for a task's live log: %s",
                            self.address, exc)  # fmt: skip
                return None
            return self._client

    def read(self, path: str) -> tuple[list[str], list[str]]:
        """``(sources, [text])`` of the file at ``path`` on the worker that has it;
        ``([], [])`` when no worker has it or the cluster cannot be asked. Never raises."""
        client = self._get_client()
        if client is None:
            return [], []
        try:
            texts = client.run(read_task_log, path, MAX_BYTES, on_error="ignore")
        except Exception as exc:
            log.warning("could not ask the Dask workers for %s: %s", path, exc)
            return [], []
        found = [(worker, text) for worker, text in texts.items() if text]
        if not found:
            return [], []
        worker, text = max(found, key=lambda item: len(item[1]))  # a shared folder: any
        return [f"{path} on Dask worker {worker} (live, through airdask)"], [text]

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                log.debug("closing the Dask client", exc_info=True)
