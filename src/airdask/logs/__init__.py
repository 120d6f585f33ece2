"""Where task logs live: ``dag_id=…/run_id=…/task_id=…/[map_index=…/]attempt=N.log`` under
``[logging] base_log_folder``, a file per attempt where a runner writes it itself; the logs
the scheduler harvests are packed per run instead (:mod:`airdask.logs.packs`)."""

from __future__ import annotations

from pathlib import Path

from airdask.state import TaskInstanceKey


def _safe(part: str) -> str:
    return part.replace("/", "_").replace("\x00", "_")


def log_relpath(key: TaskInstanceKey) -> str:
    """The log's path under the log folder, ``/``-separated (a plain string: it is built
    twice per attempt, and a PurePosixPath costs more than the rest of the spec)."""
    mapped = f"map_index={key.map_index}/" if key.map_index >= 0 else ""
    return (
        f"dag_id={_safe(key.dag_id)}/run_id={_safe(key.run_id)}/task_id={_safe(key.task_id)}/"
        f"{mapped}attempt={key.try_number}.log"
    )


def log_path(base_log_folder: str | Path, key: TaskInstanceKey) -> Path:
    return Path(base_log_folder) / log_relpath(key)


def read_log(base_log_folder: str | Path, key: TaskInstanceKey) -> tuple[list[str], list[str]]:
    """``(messages, log_lines)`` as ``get_task_log`` returns them, from the log folder: the
    attempt's own file, else its run's pack."""
    from airdask.logs.packs import pack_location, read_packed

    path = log_path(base_log_folder, key)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        packed = read_packed(str(base_log_folder), key)
        if packed is None:
            return [f"no log file at {path}, nor a packed log of it"], []
        pack, text = packed
        return [f"log file: {pack}, packed as {pack_location(key)[1]}"], text.splitlines()
    return [f"log file: {path}"], text.splitlines()


def log_exists(base_log_folder: str | Path, key: TaskInstanceKey) -> bool:
    """Whether the attempt's log is in the log folder (its own file or its run's pack)."""
    from airdask.logs.packs import packed_exists

    return log_path(base_log_folder, key).exists() or packed_exists(str(base_log_folder), key)
