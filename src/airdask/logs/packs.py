"""Harvested task logs, packed: one append-only file per run instead of one per attempt.

A log the scheduler harvests (the DaskExecutor and the CeleryExecutor push each attempt's
log back with its outcome) used to become a file of its own, and a file of its own is a
directory and an inode: on the ext4 of a small VM that cost 0.2-0.6 ms of kernel time per
attempt, more than the scheduler spent on the attempt, and a 100,000-task run left
100,000 directories behind. So the writer appends every harvested log of a run to that
run's ``attempts.log`` and records where it is in ``attempts.idx`` (ADR 0016):

* ``attempts.log`` is text a person can read (``less``, ``grep``): each log is a header
  line ``--- airdask log task_id=…/attempt=N.log (B bytes) ---`` and then the log itself.
* ``attempts.idx`` holds a JSON line ``[offset, length, member]`` per log, written after
  the log's bytes: a reader that sees the line finds the bytes. The last line of a member
  wins (a log written again, its full tail taken later, replaces the first).
* Writers hold an exclusive ``flock`` on the pack while they append, so two schedulers (or
  two executors of one) sharing a log folder never interleave their records.

Logs that runners write themselves (the local executors, a Celery worker sharing the
folder) stay one file per attempt; :func:`airdask.logs.read_log` reads either.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from airdask.logs import log_relpath
from airdask.state import TaskInstanceKey

log = logging.getLogger(__name__)

PACK_NAME = "attempts.log"
INDEX_NAME = "attempts.idx"
#: Indexes kept parsed in memory (the runs whose logs were read last).
INDEX_CACHE_RUNS = 8


def pack_location(key: TaskInstanceKey) -> tuple[str, str]:
    """``(run folder, member)`` of ``key``'s log, both ``/``-separated and relative: the
    member is the log's path inside its run folder (``task_id=…/attempt=N.log``)."""
    relpath = log_relpath(key)
    dag_part, run_part, member = relpath.split("/", 2)
    return f"{dag_part}/{run_part}", member


def append_logs(folder: str, logs: Sequence[tuple[TaskInstanceKey, str]]) -> None:
    """Append the logs ``(key, text)`` to their runs' packs under ``folder``: per run, one
    write of all its records and one of their index lines, under the pack's lock. A run
    whose pack cannot be written is logged and skipped; the other runs' logs still go in."""
    by_run: dict[str, list[tuple[str, bytes]]] = {}
    for key, text in logs:
        run_dir, member = pack_location(key)
        by_run.setdefault(run_dir, []).append((member, text.encode("utf-8", errors="replace")))
    for run_dir, records in by_run.items():
        path = os.path.join(folder, run_dir)
        try:
            _append(path, records)
        except OSError as exc:
            log.warning("could not write %d task log(s) to %s: %s", len(records), path, exc)


def _open_append(path: str) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except FileNotFoundError:  # the run's first log
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _append(run_dir: str, records: Iterable[tuple[str, bytes]]) -> None:
    pack = _open_append(os.path.join(run_dir, PACK_NAME))
    try:
        fcntl.flock(pack, fcntl.LOCK_EX)
        offset = os.lseek(pack, 0, os.SEEK_END)
        chunks: list[bytes] = []
        lines: list[str] = []
        for member, data in records:
            header = f"--- airdask log {member} ({len(data)} bytes) ---\n".encode()
            offset += len(header)
            lines.append(json.dumps([offset, len(data), member]) + "\n")
            chunks += (header, data, b"\n")
            offset += len(data) + 1
        _write_all(pack, b"".join(chunks))
        index = _open_append(os.path.join(run_dir, INDEX_NAME))
        try:
            _write_all(index, "".join(lines).encode())
        finally:
            os.close(index)
    finally:
        os.close(pack)  # and with it the lock


@dataclass
class _Index:
    """A run's index as parsed so far: the complete lines of its first ``parsed`` bytes."""

    inode: int
    parsed: int = 0
    entries: dict[str, tuple[int, int]] = field(default_factory=dict)


_cache: OrderedDict[str, _Index] = OrderedDict()
_cache_lock = threading.Lock()


def _entry(run_dir: str, member: str) -> tuple[int, int] | None:
    """``(offset, length)`` of ``member`` in the run's pack, reading only the index lines
    appended since the last call (the whole index again if it was replaced)."""
    path = os.path.join(run_dir, INDEX_NAME)
    try:
        with open(path, "rb") as fh:
            stat = os.fstat(fh.fileno())
            with _cache_lock:
                index = _cache.get(path)
                if index is None or index.inode != stat.st_ino or stat.st_size < index.parsed:
                    index = _Index(stat.st_ino)
                _cache[path] = index
                _cache.move_to_end(path)
                while len(_cache) > INDEX_CACHE_RUNS:
                    _cache.popitem(last=False)
                if stat.st_size > index.parsed:
                    fh.seek(index.parsed)
                    _parse(index, fh.read(stat.st_size - index.parsed))
                return index.entries.get(member)
    except FileNotFoundError:
        return None


def _parse(index: _Index, data: bytes) -> None:
    complete = data.rfind(b"\n") + 1  # a line still being written is read next time
    for line in data[:complete].splitlines():
        try:
            offset, length, member = json.loads(line)
        except ValueError:  # not one of ours: skipped, the others still count
            continue
        index.entries[str(member)] = (int(offset), int(length))
    index.parsed += complete


def read_packed(folder: str, key: TaskInstanceKey) -> tuple[str, str] | None:
    """``(pack path, text)`` of ``key``'s packed log, or None when its run has none."""
    run_dir, member = pack_location(key)
    run_dir = os.path.join(folder, run_dir)
    found = _entry(run_dir, member)
    if found is None:
        return None
    offset, length = found
    path = os.path.join(run_dir, PACK_NAME)
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(length)
    return path, data.decode("utf-8", errors="replace")


def packed_exists(folder: str, key: TaskInstanceKey) -> bool:
    run_dir, member = pack_location(key)
    return _entry(os.path.join(folder, run_dir), member) is not None


def packed_logs(run_dir: str) -> dict[str, str]:
    """Every log packed in the run folder ``run_dir``, member -> text (the last of each)."""
    index = _Index(0)
    try:
        with open(os.path.join(run_dir, INDEX_NAME), "rb") as fh:
            _parse(index, fh.read())
        with open(os.path.join(run_dir, PACK_NAME), "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return {}
    return {
        member: data[offset : offset + length].decode("utf-8", errors="replace")
        for member, (offset, length) in index.entries.items()
    }
