"""Bash commands that record each run of a task in the test's ledger file.

One line per event, ``start|end <epoch> <dask worker> <dag.task> <run_id> <try> <bash pid>``:
the tests read the ledger to count runs, measure concurrency and find processes.
"""


def recorded(body: str, *, seconds: float | str = 0) -> str:
    me = "$AIRDASK_TEST_WORKER {{ ti.dag_id }}.{{ ti.task_id }} {{ run_id }} {{ ti.try_number }} $$"
    sleep = f"sleep {seconds}; " if seconds else ""
    return (
        f'echo "start $(date +%s.%N) {me}" >> "$AIRDASK_TEST_LEDGER"; {sleep}{body}; '
        f'code=$?; echo "end $(date +%s.%N) {me}" >> "$AIRDASK_TEST_LEDGER"; exit $code'
    )
