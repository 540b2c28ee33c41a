"""Two tasks: bash echo, then a Python task whose return value becomes an XCom."""

from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import dag, task


@dag(dag_id="celeriac_e2e_simple", schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
def simple():
    @task
    def give_value():
        return "celeriac-says-42"

    BashOperator(task_id="echo", bash_command="echo hello from celeriac") >> give_value()


simple()
