"""One long bash task, for the shutdown (SIGTERM drain) and kill -9 checks.
The duration comes from the run's conf: {"seconds": N} (default 30)."""

from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="celeriac_e2e_sleep",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    params={"seconds": 30},
):
    BashOperator(
        task_id="sleep",
        bash_command="echo sleeping {{ params.seconds }}s; sleep {{ params.seconds }}; echo slept",
    )
