"""The Celery app the celeriac interop tests run against (real Celery 5.7).

Everything comes from the environment so one file serves every test:

INTEROP_BROKER_URL        broker URL (required)
INTEROP_RESULT_BACKEND    result backend URL (default: disabled)
INTEROP_QUEUE             task_default_queue (default "celery")
INTEROP_TASK_PROTOCOL     task_protocol, 1 or 2 (default 2)
INTEROP_GLOBAL_KEYPREFIX  Redis broker transport option global_keyprefix
INTEROP_VISIBILITY_TIMEOUT  Redis broker visibility_timeout in seconds; also
                          makes kombu sweep for expired unacked messages every
                          second instead of every ~100 s
INTEROP_ACKS_LATE         "1" → task_acks_late (ack after the task ran)
INTEROP_PREFETCH_MULTIPLIER  worker_prefetch_multiplier (default 4)
INTEROP_MARK_REDIS_URL    Redis that interop.mark writes to (default db 0)
INTEROP_MARK_SET          the Redis set interop.mark adds its task id to; it
                          also counts its executions in <set>:count:<who>
INTEROP_MARK_WHO          who is counting (default "py")
"""

import os
import time

import redis as redis_py
from celery import Celery


def env(name, default=None):
    value = os.environ.get(name)
    return default if value in (None, "") else value


def broker_transport_options():
    options = {}
    prefix = env("INTEROP_GLOBAL_KEYPREFIX")
    if prefix:
        options["global_keyprefix"] = prefix
    visibility = env("INTEROP_VISIBILITY_TIMEOUT")
    if visibility:
        options["visibility_timeout"] = float(visibility)
        # kombu only sweeps every interval*throttle seconds (100 s by default):
        # a short visibility timeout is useless without a short sweep period.
        options["unacked_restore_interval"] = 1
        options["unacked_restore_throttle"] = 1
    return options


def make_app(protocol=None):
    app = Celery(
        "interop",
        broker=env("INTEROP_BROKER_URL"),
        backend=env("INTEROP_RESULT_BACKEND"),
    )
    app.conf.update(
        task_default_queue=env("INTEROP_QUEUE", "celery"),
        task_protocol=int(protocol or env("INTEROP_TASK_PROTOCOL", "2")),
        task_acks_late=env("INTEROP_ACKS_LATE") == "1",
        worker_prefetch_multiplier=int(env("INTEROP_PREFETCH_MULTIPLIER", "4")),
        broker_transport_options=broker_transport_options(),
        broker_connection_retry_on_startup=True,
        result_expires=3600,
        enable_utc=True,
        timezone="UTC",
    )
    register_tasks(app)
    return app


_mark_client = None


def mark_client():
    # One connection per (pool) process, made lazily after the fork.
    global _mark_client
    if _mark_client is None:
        url = env("INTEROP_MARK_REDIS_URL", "redis://127.0.0.1:6379/0")
        _mark_client = redis_py.Redis.from_url(url)
    return _mark_client


def register_tasks(app):
    @app.task(name="interop.add", shared=False)
    def add(x, y=0):
        return x + y

    @app.task(name="interop.echo", shared=False)
    def echo(value):
        return value

    @app.task(name="interop.fail", shared=False)
    def fail(message):
        raise ValueError(message)

    @app.task(name="interop.xsum", shared=False)
    def xsum(values):
        return sum(values)

    @app.task(name="interop.mark", bind=True, shared=False)
    def mark(self, sleep=0):
        key = env("INTEROP_MARK_SET")
        # One transaction: a kill -9 can never separate the mark from its count.
        pipe = mark_client().pipeline(transaction=True)
        pipe.sadd(key, self.request.id)
        pipe.incr("%s:count:%s" % (key, env("INTEROP_MARK_WHO", "py")))
        pipe.execute()
        if sleep:
            time.sleep(float(sleep))
        return self.request.id


app = make_app()
