"""Read task results the way a Python client does: ``AsyncResult(id).get()``.

usage: get_results.py [--timeout S] [--announce-pending] ID...

For each id prints one JSON line (kombu JSON) on stdout:
{"id", "state", "outcome": "value" | "raised" | "timeout", "value", "repr",
 "exc_class": "<module>.<qualname>", "exc_args": [...], "waited": seconds,
 "date_done": ISO text or null}

--announce-pending: first make sure the result is not there yet (a short
get() that must time out — this also SUBSCRIBEs on the Redis backend), print
{"pending": id} and flush, then wait. The test writes the result only after
reading that line, so the second get() can only be woken by the backend's
PUBLISH (or, on the database backend, by polling).
"""

import argparse
import os
import sys
import time

from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult
from kombu.utils.json import dumps

from interop_app import app


def emit(doc):
    sys.stdout.write(dumps(doc) + "\n")
    sys.stdout.flush()


def wait_pending(result):
    try:
        value = result.get(timeout=0.3, interval=0.1)
    except CeleryTimeout:
        emit({"pending": result.id})
        return True
    except Exception as exc:  # noqa: BLE001 - reported to the test
        emit({"id": result.id, "error": "result was already there: %r" % (exc,)})
        return False
    emit({"id": result.id, "error": "result was already there: %r" % (value,)})
    return False


def read(result, timeout):
    started = time.monotonic()
    doc = {"id": result.id}
    try:
        value = result.get(timeout=timeout, interval=0.1)
        doc.update(outcome="value", value=value, repr=repr(value))
    except CeleryTimeout:
        doc.update(outcome="timeout")
    except Exception as exc:  # noqa: BLE001 - the test checks the class
        cls = type(exc)
        doc.update(outcome="raised",
                   exc_class="%s.%s" % (cls.__module__, cls.__qualname__),
                   exc_args=list(exc.args), repr=repr(exc))
    done = result.date_done
    doc.update(state=result.state, waited=time.monotonic() - started,
               date_done=done.isoformat() if hasattr(done, "isoformat") else done)
    emit(doc)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--announce-pending", action="store_true")
    parser.add_argument("ids", nargs="+")
    opts = parser.parse_args()
    for task_id in opts.ids:
        result = AsyncResult(task_id, app=app)
        if opts.announce_pending and not wait_pending(result):
            continue
        read(result, opts.timeout)
    # Skip interpreter teardown: AsyncResult.__del__ then talks to a
    # half-dead redis client and prints noise on stderr.
    os._exit(0)


if __name__ == "__main__":
    main()
