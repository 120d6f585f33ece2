"""A DAG for the Airflow 3 recipe: fan-out on the Dask workers, one task in the gpu pool."""

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG("hello_airflow_dask", schedule=None, catchup=False) as dag:
    start = BashOperator(task_id="start", bash_command="echo start on $(hostname)")
    fan = [BashOperator(task_id=f"part_{i}", bash_command=f"echo part {i}") for i in range(8)]
    gpu = BashOperator(task_id="train", bash_command="echo training", pool="gpu")
    start >> fan >> gpu
