"""DAGs of the Airflow 3 end-to-end tests (tests/airflow_provider/test_airflow_e2e.py)."""

import os
import sys
from datetime import timedelta

sys.path.insert(0, os.path.dirname(__file__))

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG
from ledger import recorded

with DAG("af_fail", schedule=None, catchup=False) as fail_dag:
    failing = BashOperator(
        task_id="failing",
        bash_command=recorded("echo about to fail; exit 3"),
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
    failing >> BashOperator(task_id="after", bash_command="echo never")

with DAG("af_pool", schedule=None, catchup=False, max_active_tasks=16) as pool_dag:
    for i in range(6):
        BashOperator(task_id=f"io_{i}", bash_command=recorded("true", seconds=2), pool="dask_io")

with DAG("af_queue", schedule=None, catchup=False) as queue_dag:
    BashOperator(task_id="special", bash_command=recorded("echo special"), queue="special")
    BashOperator(task_id="nowhere", bash_command="echo never", queue="no_such_queue")

with DAG("af_logs", schedule=None, catchup=False) as logs_dag:
    BashOperator(task_id="talk", bash_command="echo the-task-said-hello-to-its-log")

with DAG("af_slow", schedule=None, catchup=False, max_active_tasks=16) as slow_dag:
    for i in range(4):
        BashOperator(task_id=f"slow_{i}", bash_command=recorded("true", seconds=45))

with DAG("af_victim", schedule=None, catchup=False) as victim_dag:
    BashOperator(
        task_id="victim",
        bash_command=recorded("sleep 0.1", seconds="{{ 60 if ti.try_number == 1 else 0 }}"),
        retries=1,
        retry_delay=timedelta(seconds=1),
    )

with DAG("af_live", schedule=None, catchup=False) as live_dag:
    # Says hello, then runs until the test creates its release file (at most 120 s).
    BashOperator(
        task_id="live",
        bash_command=(
            "echo the-running-task-said-hello; "
            'for i in $(seq 1200); do [ -e "$AIRDASK_TEST_LEDGER.release.{{ run_id }}" ] '
            "&& exit 0; sleep 0.1; done; exit 1"
        ),
    )

with DAG("af_nopool", schedule=None, catchup=False) as nopool_dag:
    # Airflow's pool dask_io has 4 slots; the one worker offering resource dask_io has 2.
    BashOperator(task_id="too_big", bash_command="echo never", pool="dask_io", pool_slots=3)
