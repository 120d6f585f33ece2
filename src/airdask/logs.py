"""Where task logs live: ``dag_id=…/run_id=…/task_id=…/[map_index=…/]attempt=N.log``."""

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
    """``(messages, log_lines)`` as ``get_task_log`` returns them, from the log folder."""
    path = log_path(base_log_folder, key)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return [f"no log file at {path}"], []
    return [f"log file: {path}"], text.splitlines()
