"""A task that always fails, and one that fails its first try and succeeds on the retry."""

from datetime import datetime, timedelta

from airflow.sdk import dag, task


@dag(dag_id="celeriac_e2e_fail", schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
def fail():
    @task(retries=0)
    def boom():
        raise RuntimeError("celeriac e2e: this task fails on purpose")

    @task(retries=1, retry_delay=timedelta(seconds=1))
    def flaky(ti=None):
        if ti.try_number < 2:
            raise RuntimeError(f"celeriac e2e: try {ti.try_number} fails on purpose")
        return f"succeeded on try {ti.try_number}"

    boom()
    flaky()


fail()
