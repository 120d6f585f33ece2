"""What DaskExecutor hands to Dask in one go: the attempts ``execute_async`` accepted,
grouped into ``client.map`` calls."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from airdask.runner import TaskSpec
from airdask.state import TaskInstanceKey

#: Most attempts per ``client.map`` message (keeps each graph message around 1 MB).
SUBMIT_CHUNK = 1000


@dataclass
class Pending:
    """An attempt accepted by ``execute_async`` and not yet handed to Dask."""

    key: TaskInstanceKey
    spec: TaskSpec
    priority: int
    resources: dict[str, float] | None


def chunked_groups(
    pending: list[Pending],
) -> Iterator[tuple[int, dict[str, float] | None, list[Pending]]]:
    """``(priority, resources, attempts)`` per ``client.map`` call, in submission order."""
    groups: dict[tuple[int, tuple[tuple[str, float], ...]], list[Pending]] = {}
    for item in pending:
        group = (item.priority, tuple(sorted((item.resources or {}).items())))
        groups.setdefault(group, []).append(item)
    for (priority, resources), items in groups.items():
        for start in range(0, len(items), SUBMIT_CHUNK):
            yield priority, dict(resources) or None, items[start : start + SUBMIT_CHUNK]
