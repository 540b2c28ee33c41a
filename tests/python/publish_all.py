"""Publish one task message of every kind the wire fixtures cover.

Prints one JSON document (kombu JSON, so typed values keep their
``__type__`` envelopes) on stdout:

{"messages": [{"case", "intent": {...what the call asked for...},
               "sent_at": unix seconds just before the call,
               "headers", "properties", "body", "exchange", "routing_key"}]}

``headers``/``properties``/``body`` are what Celery handed to kombu, captured
with the ``before_task_publish`` signal, so the test compares the decoded
message with exactly what Python sent.
"""

import datetime
import decimal
import os
import sys
import time
import uuid

from celery import chain, chord, group, signals
from kombu.utils.json import dumps

from interop_app import make_app

captured = []
current = {}


@signals.before_task_publish.connect
def capture(sender=None, body=None, exchange=None, routing_key=None,
            headers=None, properties=None, **_):
    captured.append({
        "case": current["case"],
        "intent": current["intent"],
        "sent_at": current["sent_at"],
        "task": sender,
        "headers": dict(headers or {}),
        "properties": dict(properties or {}),
        "body": body,
        "exchange": exchange,
        "routing_key": routing_key,
    })


def case(label, **intent):
    current.update(case=label, intent=intent, sent_at=time.time())


def typed_values():
    return {
        "datetime": datetime.datetime(2024, 1, 2, 3, 4, 5, 678901,
                                      tzinfo=datetime.timezone.utc),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "decimal": decimal.Decimal("1.10"),
        "bytes": b"hello bytes",
        "binary": b"\xff\x00\xfe",
    }


def publish_v2(app):
    t = app.tasks
    add, fail, echo, xsum = (t["interop.add"], t["interop.fail"],
                             t["interop.echo"], t["interop.xsum"])
    case("plain", args=[2], kwargs={"y": 3})
    add.apply_async((2,), {"y": 3})
    case("countdown", countdown=60)
    add.apply_async((1, 1), countdown=60)
    eta = datetime.datetime(2031, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    case("eta", eta=eta.isoformat())
    add.apply_async((1, 2), eta=eta)
    case("expires", expires=120)
    add.apply_async((1, 3), expires=120)
    for p in (0, 1, 3, 5, 6, 9):
        case("priority-%d" % p, priority=p)
        add.apply_async((p, 0), priority=p)
    case("timelimit", time_limit=30, soft_time_limit=20)
    add.apply_async((1, 4), time_limit=30, soft_time_limit=20)
    case("shadow_ignore_result", shadow="interop.shadowed", ignore_result=True)
    add.apply_async((1, 5), shadow="interop.shadowed", ignore_result=True)
    case("link_errback", link="interop.add", link_error="interop.fail")
    add.apply_async((1, 6), link=add.s(10),
                    link_error=fail.si("linked failure"))
    case("chain", steps=["interop.add", "interop.add", "interop.add"])
    chain(add.s(1, 2), add.s(3), add.s(4)).apply_async()
    case("group", size=2)
    group(add.s(1, 1), add.s(2, 2)).apply_async()
    case("chord", size=2, body="interop.xsum")
    chord([add.s(3, 3), add.s(4, 4)], xsum.s()).apply_async()
    values = typed_values()
    case("typed_args", values=list(values))
    echo.apply_async((list(values.values()),))
    case("typed_kwargs", values=list(values))
    echo.apply_async((), {"value": values})
    case("compression", compression="zlib")
    add.apply_async((1, 7), compression="zlib")
    case("send_task_unregistered", name="no.such.task")
    app.send_task("no.such.task", args=[1], kwargs={"k": "v"})


def publish_v1(app):
    add = app.tasks["interop.add"]
    case("protocol1", protocol=1, args=[2], kwargs={"y": 3})
    add.apply_async((2,), {"y": 3})
    case("protocol1_countdown", protocol=1, countdown=60, expires=120)
    add.apply_async((2, 2), countdown=60, expires=120)


def main():
    publish_v2(make_app(protocol=2))
    publish_v1(make_app(protocol=1))
    sys.stdout.write(dumps({"messages": captured}))
    sys.stdout.write("\n")
    sys.stdout.flush()
    # Skip interpreter teardown: AsyncResult.__del__ then talks to a
    # half-dead redis client and prints noise on stderr.
    os._exit(0)


if __name__ == "__main__":
    main()
