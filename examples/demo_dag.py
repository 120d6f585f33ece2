"""airdask demo: pools, a priority, a retry that succeeds on its second try, a Python task
and a bash task.

``make demo`` creates the ``demo_io`` pool (2 slots) and runs this file::

    airdask pools set demo_io 2 --description "demo downloads"
    airdask run examples/demo_dag.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from airdask.dag import DAG, BashTask, PythonTask

# The flaky task's first try leaves a marker and fails; the second try finds it, removes it
# and succeeds. It lives in AIRDASK_HOME, which `make demo` points at .airdask-demo.
MARKER = Path(os.environ.get("AIRDASK_HOME", ".airdask-demo")) / "demo-flaky.marker"


def flaky(marker: str) -> None:
    """Fails on its first try, succeeds on the second."""
    path = Path(marker)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the first try failed here\n")
        raise RuntimeError("first try fails on purpose (a marker is left for the retry)")
    path.unlink()
    print("second try: marker found, succeeding")


def summarise(n: int) -> None:
    time.sleep(0.2)
    print(f"sum of range({n}) = {sum(range(n))}")


with DAG("demo", description="pools, priority, retry, Python and bash tasks") as dag:
    start = BashTask("start", "echo starting the demo on $(hostname)")
    # Six downloads, at most two at a time: the demo_io pool has 2 slots.
    downloads = [
        BashTask(f"download_{i}", f"echo download {i}; sleep 0.5", pool="demo_io") for i in range(6)
    ]
    # Highest priority: it is queued before the downloads when slots are scarce.
    urgent = BashTask("urgent_report", "echo urgent report first", priority_weight=100)
    fetch = PythonTask("flaky_fetch", flaky, op_args=[str(MARKER)], retries=1, retry_delay=0.5)
    total = PythonTask("summarise", summarise, op_args=[1000])
    end = BashTask("end", "echo demo finished")

    start >> downloads >> total
    start >> [urgent, fetch]
    [total, urgent, fetch] >> end
