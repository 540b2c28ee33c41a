"""The Python side of the echo benchmark: a Celery app whose `celeriac.echo`
does what celeriac's built-in does (return the first argument)."""
import os

from celery import Celery

app = Celery("bench", broker=os.environ["BENCH_BROKER"], backend=os.environ["BENCH_BACKEND"])
app.conf.worker_hijack_root_logger = False


@app.task(name="celeriac.echo")
def echo(x=None, *args, **kwargs):
    return x
