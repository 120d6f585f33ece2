"""The DAG files of ``[core] dags_folder``, as ``airdask scheduler`` sees them between passes.

:meth:`DagFolderScan.scan` looks at the folder at most every ``every`` seconds: a ``stat`` per
file, and an import only of files that are new or changed since the last look. The DAGs it
loaded are in :attr:`DagFolderScan.dags`; a file that fails to import keeps its DAGs out
(its error is logged by :class:`~airdask.dagbag.DagBag`) until it imports again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from airdask.dag import DAG
from airdask.dagbag import DagBag


class DagFolderScan:
    def __init__(self, folder: str, *, every: float = 5.0) -> None:
        self.folder = Path(folder).expanduser()
        self.every = every
        #: DAGs by id, from the files as they were at the last scan.
        self.dags: dict[str, DAG] = {}
        self._mtimes: dict[Path, float] = {}
        self._ids: dict[Path, list[str]] = {}
        self._last = float("-inf")

    def scan(self, *, force: bool = False) -> list[DAG]:
        """Load new and changed files; return the DAGs loaded now (empty when nothing
        changed or the last scan is younger than ``every`` seconds)."""
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return []
        self._last = now
        if not self.folder.is_dir():
            return []
        files = {
            p.resolve() for p in self.folder.rglob("*.py") if not p.name.startswith(("_", "."))
        }
        loaded: list[DAG] = []
        for path in sorted(files):
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                continue
            if self._mtimes.get(path) == mtime:
                continue
            self._mtimes[path] = mtime
            for dag_id in self._ids.pop(path, []):
                self.dags.pop(dag_id, None)
            bag = DagBag()
            found = bag.load_file(path)
            self._ids[path] = [d.dag_id for d in found]
            for dag in found:
                self.dags[dag.dag_id] = dag
            loaded.extend(found)
        for path in set(self._mtimes) - files:  # removed files take their DAGs with them
            del self._mtimes[path]
            for dag_id in self._ids.pop(path, []):
                self.dags.pop(dag_id, None)
        return loaded
