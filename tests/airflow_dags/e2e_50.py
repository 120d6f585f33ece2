"""start >> 48 echo >> end: the DAG of the Airflow 3 LocalExecutor anchor (29.4 s)."""

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG("e2e_50", schedule=None, catchup=False, max_active_tasks=64) as dag:
    start = BashOperator(task_id="start", bash_command="echo start")
    mids = [BashOperator(task_id=f"mid_{i}", bash_command=f"echo mid {i}") for i in range(48)]
    end = BashOperator(task_id="end", bash_command="echo end")
    start >> mids >> end
