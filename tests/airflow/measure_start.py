"""Measure celeriac-worker's queued->running for Airflow 3 workloads without
a scheduler: push a captured `execute_workload` message (fresh Celery id)
onto a Redis queue, then read the task's "Executing workload" line — the
first thing the Task SDK logs, right after it parsed the workload — from the
worker's own log copy (<log-dir>/<queue>/<id>.log). The Execution API is not
needed: without one the SDK fails after that line (exit 1, FAILURE).

  python measure_start.py --redis redis://127.0.0.1:6379/14 --queue q --log-dir DIR [-n 5]

Run it with any Python that has `redis` (the Airflow venv has it).
"""
import argparse
import base64
import datetime
import json
import os
import pathlib
import time
import uuid

import redis

FIXTURE = pathlib.Path(__file__).resolve().parents[2] / "broker-compat/tests/fixtures/airflow/redis_queue_afcap_simple_echo.json"


def envelope(queue, task_id):
    raw = json.loads(json.loads(FIXTURE.read_text())["messages"][0]["raw"])
    body = json.loads(base64.b64decode(raw["body"]))
    raw["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    raw["headers"].update(id=task_id, root_id=task_id)
    raw["properties"].update(correlation_id=task_id, delivery_tag=str(uuid.uuid4()))
    raw["properties"]["delivery_info"]["routing_key"] = queue
    return json.dumps(raw)


def started_at(path, deadline):
    while time.time() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("event") == "Executing workload":
                    ts = ev["timestamp"].replace("Z", "+00:00")
                    return datetime.datetime.fromisoformat(ts).timestamp()
        time.sleep(0.005)
    raise TimeoutError(f"no 'Executing workload' line in {path}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--redis", required=True)
    p.add_argument("--queue", required=True)
    p.add_argument("--log-dir", required=True)
    p.add_argument("-n", type=int, default=5)
    a = p.parse_args()
    r = redis.Redis.from_url(a.redis)
    out = []
    for _ in range(a.n):
        tid = str(uuid.uuid4())
        queued = time.time()
        r.lpush(a.queue, envelope(a.queue, tid))
        running = started_at(pathlib.Path(a.log_dir) / a.queue / f"{tid}.log", queued + 60)
        out.append(running - queued)
        time.sleep(0.5)
    print("queued->running (s):", " ".join(f"{x:.3f}" for x in out))


if __name__ == "__main__":
    main()
