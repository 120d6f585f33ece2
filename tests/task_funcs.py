"""Task callables used by the tests. Registered for pickling by value (see conftest), so
they run on workers that cannot import the tests folder."""

from __future__ import annotations

import inspect
import os
import time
from pathlib import Path
from typing import Any


def append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def ledger_task(path: str, name: str, seconds: float) -> None:
    """Record start and end times so a test can measure concurrency and order."""
    append_line(path, f"start {name} {time.time():.6f} {os.getpid()}")
    time.sleep(seconds)
    append_line(path, f"end {name} {time.time():.6f} {os.getpid()}")


def ledger_step(ledger: str, name: str, middle: float | str) -> str:
    """The shell command of a ledger task: like :func:`ledger_task`, ``start NAME TIME PID``
    and ``end NAME TIME PID`` lines (PID the shell's) around ``middle``, a number of seconds
    to sleep or a shell command."""
    body = middle if isinstance(middle, str) else f"sleep {middle}"
    return (
        f'echo "start {name} $(date +%s.%N) $$" >> {ledger}; {body}; '
        f'echo "end {name} $(date +%s.%N) $$" >> {ledger}'
    )


def ledger_step_source(ledger: Path | str) -> str:
    """Lines of a DAG file that define ``step(name, middle)``: :func:`ledger_step` on
    ``ledger``. A DAG file is read by an ``airdask`` process, which cannot import the tests'
    modules, so it gets the function's own source."""
    return (
        f"{inspect.getsource(ledger_step)}\n"
        f"def step(name, middle):\n    return ledger_step({str(ledger)!r}, name, middle)\n"
    )


def wait_for_event(name: str) -> None:
    """Block until the ``distributed.Event`` ``name`` is set (at most two minutes)."""
    from distributed import Event

    Event(name).wait(timeout=120)


def say(text: str) -> None:
    print(text)


def fail_with(message: str) -> None:
    print("failing now")
    raise RuntimeError(message)


def read_ledger(path: str) -> list[tuple[str, str, float]]:
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as fh:
        for line in fh:
            kind, name, stamp, _pid = line.split()
            rows.append((kind, name, float(stamp)))
    return rows


def max_concurrency(path: str) -> int:
    events = sorted(
        ((stamp, 1 if kind == "start" else -1) for kind, _, stamp in read_ledger(path)),
        key=lambda e: (e[0], e[1]),
    )
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def start_order(path: str) -> list[str]:
    return [
        name for kind, name, _ in sorted(read_ledger(path), key=lambda r: r[2]) if kind == "start"
    ]


# ---- run context and results (tests/test_pipelines*.py) -------------------------------


def context_of(context: dict[str, Any]) -> dict[str, Any]:
    """Return the parts of the run context a test checks (as JSON-able values)."""
    return {
        "dag_id": context["dag_id"],
        "task_id": context["task_id"],
        "run_id": context["run_id"],
        "try_number": context["try_number"],
        "map_index": context["map_index"],
        "logical_date": context["logical_date"].isoformat(),
        "interval": [d.isoformat() for d in context["data_interval"]],
        "conf": context["conf"],
        "params": context["params"],
        "ds": context["ds"],
    }


def kwargs_of(n: int, **kwargs: object) -> list[Any]:
    """``n`` and the names of the context keys received through ``**kwargs``."""
    return [n, sorted(kwargs)]


def make_rows(count: int) -> list[dict[str, int]]:
    return [{"id": i, "value": i * i} for i in range(count)]


def sum_values(rows: list[dict[str, int]], *, scale: int = 1) -> int:
    return scale * sum(row["value"] for row in rows)


def make_tuple() -> tuple[Any, ...]:
    return (1, "two", {3})


def describe(value: object) -> str:
    return f"{type(value).__name__}:{value!r}"


def make_blob(size: int) -> str:
    return "x" * size


def env_context() -> dict[str, str]:
    """The AIRDASK_CTX_* variables of this process (for a callable: none are set)."""
    return {k: v for k, v in os.environ.items() if k.startswith("AIRDASK_CTX_")}


def make_rows_text(count: str) -> list[dict[str, int]]:
    """:func:`make_rows` of a rendered template (``"{{ params.n }}"`` renders to text)."""
    return make_rows(int(count))


def record_item(path: str, item: object, *, fail_first_try_of: object = None) -> None:
    """Append ``item`` to ``path``; the first try for ``fail_first_try_of`` raises instead."""
    if item == fail_first_try_of:
        marker = f"{path}.failed-{item}"
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError(f"first try of {item} fails")
    append_line(path, str(item))


def fail_on(item: object, bad: object) -> None:
    if item == bad:
        raise RuntimeError(f"{item} is bad")


def numbers(n: int) -> list[int]:
    return list(range(n))


def square(x: int) -> int:
    return x * x


def total(values: list[int]) -> int:
    return sum(values)
