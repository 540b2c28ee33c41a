"""Sixteen tasks sleeping at once: the workers' memory under a full pool
(bench/airflow.md). The duration comes from the run's conf {"seconds": N}."""

from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="celeriac_e2e_busy16",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_tasks=16,
    params={"seconds": 20},
):
    for i in range(16):
        BashOperator(task_id=f"sleep_{i:02d}", bash_command="sleep {{ params.seconds }}")
