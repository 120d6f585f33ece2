"""Loading DAG files: every ``*.py`` of ``[core] dags_folder``, or one file.

Each file is imported as a module of its own; a file that fails to import is recorded in
:attr:`DagBag.import_errors` with the error and the others load normally. Modules are
registered with cloudpickle *by value*, so a :class:`~airdask.dag.PythonTask`'s callable
defined in a DAG file ships to workers that cannot import that file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import cloudpickle

from airdask.dag import DAG

log = logging.getLogger(__name__)


def _module_name(path: Path) -> str:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"airdask_dagfile_{stem}_{digest}"


def _short_error(exc: BaseException, path: Path) -> str:
    """The error and the innermost line of the DAG file that raised it."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    where = f" (line {frames[-1].lineno})" if frames else ""
    if isinstance(exc, SyntaxError) and exc.lineno:
        where = f" (line {exc.lineno})"
    return f"{type(exc).__name__}: {exc}{where}"


@dataclass
class DagBag:
    """DAGs by id, the file each came from, and import errors by file."""

    dags: dict[str, DAG] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    import_errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_path(cls, path: str | Path) -> DagBag:
        """Load one file, or every ``*.py`` (not starting with ``_`` or ``.``) of a folder."""
        bag = cls()
        root = Path(path).expanduser()
        if root.is_dir():
            files = sorted(p for p in root.rglob("*.py") if not p.name.startswith(("_", ".")))
        elif root.exists():
            files = [root]
        else:
            files = []
        for file in files:
            bag.load_file(file)
        return bag

    def load_file(self, path: Path) -> list[DAG]:
        path = path.resolve()
        name = _module_name(path)
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"not a Python module: {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a DAG file's own error (even sys.exit) stops only it
            sys.modules.pop(name, None)
            self.import_errors[str(path)] = _short_error(exc, path)
            log.warning("cannot import DAG file %s: %s", path, self.import_errors[str(path)])
            return []
        cloudpickle.register_pickle_by_value(module)
        found: list[DAG] = []
        for value in list(vars(module).values()):
            if isinstance(value, DAG) and value not in found:
                found.append(value)
        for dag in found:
            if dag.dag_id in self.dags and self.files[dag.dag_id] != str(path):
                self.import_errors[str(path)] = (
                    f"DAG id {dag.dag_id!r} is already defined in {self.files[dag.dag_id]}"
                )
                continue
            dag.fileloc = str(path)
            self.dags[dag.dag_id] = dag
            self.files[dag.dag_id] = str(path)
        return found

    def get_dag(self, dag_id: str) -> DAG | None:
        return self.dags.get(dag_id)


def load_dag(dag_id: str, *, dag_file: str | None, dags_folder: str) -> DAG:
    """The DAG ``dag_id`` from ``dag_file`` when given, else from ``dags_folder``.

    :raises LookupError: naming the file's import error or the missing DAG id.
    """
    where = dag_file or dags_folder
    bag = DagBag.from_path(where)
    dag = bag.get_dag(dag_id)
    if dag is not None:
        return dag
    if dag_file and dag_file in bag.import_errors:
        raise LookupError(f"cannot import {dag_file}: {bag.import_errors[dag_file]}")
    raise LookupError(f"no DAG {dag_id!r} in {where}")
