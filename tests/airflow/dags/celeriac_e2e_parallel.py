"""Twenty independent bash tasks (the spec's afcap_parallel)."""

from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="celeriac_e2e_parallel",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_tasks=32,
):
    for i in range(20):
        BashOperator(task_id=f"echo_{i:02d}", bash_command=f"echo parallel {i}")
