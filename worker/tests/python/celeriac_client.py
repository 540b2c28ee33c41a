"""A real Celery 5.7 client driving celeriac-worker in the worker's
integration tests (worker/tests/*.rs). One JSON document per stdout line.

Environment:
  CLIENT_BROKER   broker URL (required)
  CLIENT_BACKEND  result backend URL (optional)
  CLIENT_QUEUE    queue tasks are sent to (default "celery")

usage:
  celeriac_client.py call NAME ARGS KWARGS OPTIONS   send, wait, print the outcome
  celeriac_client.py send NAME ARGS KWARGS OPTIONS   send, print {"id": ...}
  celeriac_client.py send-many JSON                   send [[NAME, ARGS, OPTIONS], ...] in order
  celeriac_client.py wait ID TIMEOUT                 wait for a sent task's outcome
  celeriac_client.py meta ID                         the backend's stored meta
  celeriac_client.py inspect METHOD NODE             inspect reply from NODE
  celeriac_client.py revoke ID TERMINATE             revoke (TERMINATE: 0 or 1)
  celeriac_client.py events FILE                     collect events as JSON lines
  celeriac_client.py lpush JSON                       raw kombu envelopes onto the queue:
                                                     [[BODY, CONTENT_TYPE, HEADERS], ...]

OPTIONS is a JSON object: countdown, expires_ago (seconds in the past),
soft_time_limit, time_limit, ignore_result, task_id, timeout (for call).
The app is also `-A celeriac_client` for the `celery` command line.
"""

import datetime
import json
import os
import sys

from celery import Celery

app = Celery(
    "celeriac_client",
    broker=os.environ["CLIENT_BROKER"],
    backend=os.environ.get("CLIENT_BACKEND") or None,
)
app.conf.update(
    task_default_queue=os.environ.get("CLIENT_QUEUE") or "celery",
    broker_connection_retry_on_startup=True,
    enable_utc=True,
    timezone="UTC",
)


def emit(doc):
    sys.stdout.write(json.dumps(doc, default=repr) + "\n")
    sys.stdout.flush()


def send(name, args, kwargs, options):
    extra = {}
    for key in ("countdown", "soft_time_limit", "time_limit", "ignore_result", "task_id"):
        if key in options:
            extra[key] = options[key]
    if "expires_ago" in options:
        now = datetime.datetime.now(datetime.timezone.utc)
        extra["expires"] = now - datetime.timedelta(seconds=options["expires_ago"])
    return app.send_task(name, args=args, kwargs=kwargs, **extra)


def outcome(result, timeout):
    """The task's end as the client sees it: get() with propagate=True."""
    doc = {"id": result.id}
    try:
        doc["result"] = result.get(timeout=timeout, propagate=True)
        doc["raised"] = None
    except Exception as exc:  # what get() raised is the point of the test
        doc["raised"] = type(exc).__name__
        doc["raised_args"] = [repr(a) for a in exc.args]
    doc["state"] = result.state
    doc["traceback"] = result.traceback
    return doc


def main():
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "call":
        options = json.loads(rest[3])
        result = send(rest[0], json.loads(rest[1]), json.loads(rest[2]), options)
        emit(outcome(result, options.get("timeout", 30)))
    elif cmd == "send":
        result = send(rest[0], json.loads(rest[1]), json.loads(rest[2]), json.loads(rest[3]))
        emit({"id": result.id})
    elif cmd == "send-many":
        # One process for several messages: their order and spacing then do
        # not depend on how long Python takes to start.
        ids = [send(name, args, {}, options).id for name, args, options in json.loads(rest[0])]
        emit({"ids": ids})
    elif cmd == "wait":
        emit(outcome(app.AsyncResult(rest[0]), float(rest[1])))
    elif cmd == "meta":
        emit(app.backend.get_task_meta(rest[0]))
    elif cmd == "inspect":
        inspect = app.control.inspect(destination=[rest[1]], timeout=5)
        emit(getattr(inspect, rest[0])() or {})
    elif cmd == "revoke":
        app.control.revoke(rest[0], terminate=rest[1] == "1")
        emit({"revoked": rest[0]})
    elif cmd == "lpush":
        for body, content_type, headers in json.loads(rest[0]):
            lpush(body, content_type, headers)
        emit({"pushed": True})
    elif cmd == "events":
        collect_events(rest[0])
    else:
        raise SystemExit("unknown command %r" % cmd)


def lpush(body, content_type, headers):
    """What kombu's Redis transport would LPUSH, with any body and headers:
    malformed messages no client would send."""
    import base64
    import uuid

    import redis

    queue = app.conf.task_default_queue
    envelope = {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": headers,
        "properties": {
            "correlation_id": headers.get("id"),
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    redis.Redis.from_url(os.environ["CLIENT_BROKER"]).lpush(queue, json.dumps(envelope))


def collect_events(path):
    with open(path, "a", encoding="utf-8") as out:

        def on_event(event):
            out.write(json.dumps(event, default=repr) + "\n")
            out.flush()

        with app.connection() as conn:
            receiver = app.events.Receiver(conn, handlers={"*": on_event})
            iterations = [0]

            def on_iteration():
                # kombu subscribes to the event channel inside the first
                # drain_events(): from the second iteration on nothing the
                # worker sends is missed, so only then may the test start it.
                iterations[0] += 1
                if iterations[0] == 2:
                    emit({"ready": True})

            receiver.on_iteration = on_iteration
            receiver.capture(limit=None, timeout=None, wakeup=False)


if __name__ == "__main__":
    main()
