"""The scheduler's DAGs by id: given ones, and ones loaded on demand, reloaded when edited.

A DAG the scheduler loaded itself is remembered with its file's mtime; :meth:`DagCache.refresh`
(at most once per ``every`` seconds) imports the file again when it changed. Load errors are
kept (so a broken DAG is not re-imported for every task instance) until the next refresh.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping

from airdask.dag import DAG
from airdask.dagbag import load_dag

log = logging.getLogger(__name__)


class DagCache:
    """DAGs by id. ``dags`` given at construction are kept as they are (never reloaded)."""

    def __init__(self, dags: Mapping[str, DAG] | None = None, *, dags_folder: str) -> None:
        self.dags: dict[str, DAG] = dict(dags or {})
        #: dag_id -> why it could not be loaded (cleared by :meth:`refresh`).
        self.errors: dict[str, str] = {}
        self.dags_folder = dags_folder
        #: DAGs this cache loaded itself, with their file's mtime.
        self._loaded: dict[str, tuple[str, float]] = {}
        self._last_refresh = time.monotonic()

    def get(self, dag_id: str, dag_file: str | None = None) -> DAG | None:
        """The DAG, loaded from ``dag_file`` (else the dags folder) on first use; None when it
        cannot be loaded (the reason is in :attr:`errors`)."""
        dag = self.dags.get(dag_id)
        if dag is None and dag_id not in self.errors:
            try:
                dag = load_dag(dag_id, dag_file=dag_file, dags_folder=self.dags_folder)
            except LookupError as exc:
                self.errors[dag_id] = str(exc)
                return None
            self.dags[dag_id] = dag
            if dag.fileloc:
                self._loaded[dag_id] = (dag.fileloc, _mtime(dag.fileloc))
        return dag

    def refresh(self, *, every: float = 1.0) -> None:
        """Reload DAGs whose file changed, and forget load errors, so edits take effect."""
        now = time.monotonic()
        if now - self._last_refresh < every:
            return
        self._last_refresh = now
        self.errors.clear()
        for dag_id, (path, mtime) in list(self._loaded.items()):
            if _mtime(path) != mtime:
                log.info("DAG file %s changed: reloading %s", path, dag_id)
                del self._loaded[dag_id]
                self.dags.pop(dag_id, None)
                # Now rather than at the next lookup: the scheduler also reads ``dags``
                # directly (retry delays, callbacks, the leaf rule) and must not find the DAG
                # missing meanwhile. A file that no longer loads leaves its error instead.
                self.get(dag_id, path)


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0
