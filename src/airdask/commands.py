"""Command types: an argv list (run without a shell) or a :class:`PythonCommand`.

A ``BashTask`` builds ``["bash", "-c", script]`` explicitly; nothing else goes through a
shell. Executors turn a command into a self-contained :class:`~airdask.runner.TaskSpec`
with :func:`build_spec`, which is also where an unpicklable callable is caught.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Callable
from typing import Any

import cloudpickle

from airdask.logs import log_relpath
from airdask.runner import TaskSpec
from airdask.state import TaskInstanceKey


class CommandError(ValueError):
    """A command that cannot be run: wrong shape, or a callable that cannot be shipped."""


#: Default cap of a Python callable's kept return value (``[core] max_result_bytes``).
DEFAULT_MAX_RESULT_BYTES = 64 * 1024


class PythonCommand:
    """A Python callable with its arguments, shipped to the worker with cloudpickle.

    Its return value comes back with the outcome (``Outcome["result"]``, JSON when that
    round-trips, else cloudpickle) when it is at most :attr:`max_result_bytes` long; a
    longer one fails the attempt. ``max_result_bytes=None`` keeps nothing. The scheduler
    builds it with the attempt's run context already in ``kwargs`` (see
    :func:`airdask.context.call_kwargs`); :attr:`header` is the log's first line then.
    """

    def __init__(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        if not callable(func):
            raise CommandError(f"PythonCommand needs a callable, got {func!r}")
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.max_result_bytes: int | None = DEFAULT_MAX_RESULT_BYTES
        self.header: str | None = None

    @property
    def name(self) -> str:
        return getattr(self.func, "__qualname__", None) or repr(self.func)

    def payload(self) -> bytes:
        """The cloudpickled (func, args, kwargs); :class:`CommandError` names what failed."""
        try:
            return bytes(cloudpickle.dumps((self.func, self.args, self.kwargs)))
        except Exception as exc:
            culprit = self._find_unpicklable()
            raise CommandError(f"cannot ship {culprit} to a worker: {exc}") from exc

    def _find_unpicklable(self) -> str:
        parts: list[tuple[str, Any]] = [(f"callable {self.name}", self.func)]
        parts += [(f"argument {i} of {self.name}", a) for i, a in enumerate(self.args)]
        parts += [(f"keyword argument {k!r} of {self.name}", v) for k, v in self.kwargs.items()]
        for label, obj in parts:
            try:
                cloudpickle.dumps(obj)
            except Exception:
                return f"{label} ({type(obj).__name__} object)"
        return f"callable {self.name}"

    def __repr__(self) -> str:
        return f"PythonCommand({self.name})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PythonCommand) and (self.func, self.args, self.kwargs) == (
            other.func,
            other.args,
            other.kwargs,
        )

    __hash__ = None  # type: ignore[assignment]


class ArgvWithFiles(list[str]):
    """An argv with private files: the runner writes ``files`` ({name: content}) with mode
    0600 into a fresh private folder before the command starts and removes them after;
    ``{files}`` in an argument is that folder (see :func:`airdask.runner.private_files`).
    For secrets (tokens) that must not appear in the command line."""

    def __init__(self, argv: list[str], *, files: dict[str, str]) -> None:
        super().__init__(argv)
        self.files = dict(files)

    def __repr__(self) -> str:  # the contents may be secret
        return f"ArgvWithFiles({list(self)!r}, files={sorted(self.files)!r})"


class ArgvInRun(list[str]):
    """An argv as the scheduler builds it for one attempt of a run: ``env`` is added to the
    command's environment (``AIRDASK_CTX_LOGICAL_DATE``, ``_CONF``, ...) beside the key's
    variables, and the log starts with the command as rendered."""

    def __init__(
        self, argv: list[str], *, env: dict[str, str], files: dict[str, str] | None = None
    ) -> None:
        super().__init__(argv)
        self.env = dict(env)
        self.files = dict(files or {})

    @property
    def header(self) -> str:
        return f"[airdask] command: {shlex.join(self)}"

    def __repr__(self) -> str:
        return f"ArgvInRun({list(self)!r})"


Command = list[str] | PythonCommand


def check_command(command: object) -> Command:
    """Return ``command`` if it is a non-empty argv of strings or a PythonCommand."""
    if isinstance(command, PythonCommand):
        return command
    if isinstance(command, (list, tuple)) and command and all(isinstance(a, str) for a in command):
        if isinstance(command, ArgvInRun):
            return command
        if not isinstance(command, ArgvWithFiles):
            return list(command)
        if all(isinstance(n, str) and isinstance(c, str) for n, c in command.files.items()):
            return command
    raise CommandError(
        f"a command is a non-empty list of strings or a PythonCommand, got {command!r}"
    )


#: A task id's numbered tail (``_7``, ``000123``, ``-2024-01``), left out of its group name.
_NUMBERED_TAIL = re.compile(r"[_.\-]*[0-9][0-9_.\-]*$")


def task_group(task_id: str) -> str:
    """The name Dask groups a task's attempts under: the task id without its numbered tail,
    so that ``load_0001`` ... ``load_9999`` are one group (``load``); a task id that is
    all digits stays itself."""
    return _NUMBERED_TAIL.sub("", task_id) or task_id


def dask_key(key: TaskInstanceKey) -> str:
    """A deterministic, distinctive Dask key per attempt, grouped as ``dag_id.group``.

    Dask's dashboard groups keys by ``key_split``: the words before the first dash-separated
    word that is not purely alphabetic. The group is the task id without its numbered tail
    (:func:`task_group`): a fan-out of 100,000 numbered tasks is one group in Dask, as the
    same function mapped 100,000 times is, not 100,000 task prefixes, which Dask keeps
    forever and walks on every transition (its occupancy estimate). Dashes inside the ids
    are replaced in the readable prefix, ``try<N>`` stops the split, the task id follows
    when the group differs from it, and a digest of the full TI key keeps two attempts (or
    ids that differ only by a dash) from ever sharing a key.
    """
    group = task_group(key.task_id)
    prefix = f"{key.dag_id}.{group}".replace("-", "_")
    digest = hashlib.sha1(repr(tuple(key)).encode()).hexdigest()[:12]
    mapped = f"-m{key.map_index}" if key.map_index >= 0 else ""
    task = f"-{key.task_id}" if group != key.task_id else ""
    return f"{prefix}-try{key.try_number}{mapped}{task}-{key.run_id}-{digest}"


#: Prefix of the environment variables that tell a command where it runs (Airflow's
#: ``AIRFLOW_CTX_*`` pattern).
CONTEXT_ENV_PREFIX = "AIRDASK_CTX_"


def context_env(key: TaskInstanceKey) -> dict[str, str]:
    """The run context of one attempt as environment variables for its command."""
    return {
        f"{CONTEXT_ENV_PREFIX}DAG_ID": key.dag_id,
        f"{CONTEXT_ENV_PREFIX}TASK_ID": key.task_id,
        f"{CONTEXT_ENV_PREFIX}RUN_ID": key.run_id,
        f"{CONTEXT_ENV_PREFIX}TRY_NUMBER": str(key.try_number),
        f"{CONTEXT_ENV_PREFIX}MAP_INDEX": str(key.map_index),
    }


def build_spec(
    key: TaskInstanceKey,
    command: Command,
    *,
    log_root: str | None,
    return_log: bool,
    timeout: float | None = None,
    log_max_bytes: int = 2 * 1024 * 1024,
    capture_python_output: bool = True,
) -> TaskSpec:
    """Turn a command into the runner's plain-data spec, failing early if it cannot ship."""
    command = check_command(command)
    argv: list[str] | None = None
    payload: bytes | None = None
    files: dict[str, str] | None = None
    env: dict[str, str] = {}
    header: str | None = None
    if isinstance(command, PythonCommand):
        payload = command.payload()
        header = command.header
    else:
        argv = list(command)
        env = context_env(key)
        if isinstance(command, (ArgvWithFiles, ArgvInRun)):
            files = command.files
        if isinstance(command, ArgvInRun):
            env = {**command.env, **env}  # the key's own variables are the attempt's
            header = command.header
    spec = TaskSpec(
        key=dask_key(key),
        label=str(key),
        argv=argv,
        payload=payload,
        log_relpath=log_relpath(key),
        log_root=log_root,
        timeout=timeout,
        return_log=return_log,
        log_max_bytes=log_max_bytes,
        capture_python_output=capture_python_output,
        env=env,
    )
    if files:
        spec["files"] = dict(files)
    if header:
        spec["header"] = header
    if isinstance(command, PythonCommand) and command.max_result_bytes is not None:
        spec["result_max_bytes"] = command.max_result_bytes
    return spec
