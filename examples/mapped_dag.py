"""airdask example: a daily schedule and mapped tasks.

One task instance per table (a PythonTask mapped over a list) and per file (a BashTask
mapped over a list, each file name reaching the script as ``$1``), one per partition that a
task finds at run time (mapped over its result), and a report once every instance
succeeded, with the sum of the partitions' results. Run it once, or let
``airdask scheduler`` run it every day::

    airdask run examples/mapped_dag.py
    airdask dags backfill examples/mapped_dag.py --start 2024-01-01 --end 2024-01-03
"""

from __future__ import annotations

from datetime import datetime, timezone

from airdask.dag import DAG, BashTask, PythonTask

TABLES = ["users", "orders", "items", "payments"]
FILES = ["2024-01-01.csv", "export with spaces.csv"]


def load_table(table: str, *, rows: int) -> None:
    """Pretend to load a table (each instance gets one element of TABLES)."""
    print(f"loaded {rows} rows into {table}")


def list_partitions(count: int) -> list[str]:
    """Found only when the run gets here: the mapped task below gets one instance each."""
    return [f"part-{i:03d}" for i in range(count)]


def process(partition: str) -> int:
    print(f"processing {partition}")
    return len(partition)


def summarise(sizes: list[int]) -> int:
    """Receives the list of every ``process`` instance's result, in map_index order."""
    print(f"{len(sizes)} partitions, {sum(sizes)} bytes")
    return sum(sizes)


with DAG(
    "mapped_example",
    description="a task per table and per file, daily",
    schedule="@daily",
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=2,
) as dag:
    start = BashTask("start", "echo starting run $AIRDASK_CTX_RUN_ID")
    tables = PythonTask("load_table", load_table, op_kwargs={"rows": 100}, retries=1).expand(
        op_args=TABLES
    )
    files = BashTask("check_file", 'echo "instance $AIRDASK_CTX_MAP_INDEX checks file: $1"').expand(
        args=FILES
    )
    partitions = PythonTask("list_partitions", list_partitions, op_args=[3])
    sizes = PythonTask("process", process).expand(op_args=partitions.output)
    summary = PythonTask("summarise", summarise, op_args=[sizes])
    report = BashTask("report", f"echo {len(TABLES)} tables and {len(FILES)} files done")
    start >> [tables, files, partitions]
    [tables, files, summary] >> report
