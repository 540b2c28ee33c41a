#!/usr/bin/env python3
"""celeriac.echo throughput: celeriac-worker vs a Python Celery prefork worker,
same Redis, same message count, same concurrency, measured in one run.

Usage (from the repository root, with a venv that has celery 5.7 and redis):
    cargo build --release -p celeriac-worker
    <venv>/bin/python bench/echo_throughput.py --tasks 5000 --concurrency 2

For each worker: publish N `celeriac.echo` messages (Redis broker db 14,
results in db 15), start the worker, time until every result is stored, and
sample the worker's RSS (idle before the burst, peak during it).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BROKER = "redis://127.0.0.1:6379/14"
BACKEND = "redis://127.0.0.1:6379/15"
QUEUE = "bench"


def rss_kb(pid):
    """RSS of a process and all its descendants, in KiB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            pass
    return total


def publish(n, queue):
    os.environ["BENCH_BROKER"], os.environ["BENCH_BACKEND"] = BROKER, BACKEND
    sys.path.insert(0, HERE)
    from echo_app import app

    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task("celeriac.echo", args=[i], queue=queue, producer=producer)


def run(kind, n, concurrency, binary):
    broker, backend = redis.Redis.from_url(BROKER), redis.Redis.from_url(BACKEND)
    broker.flushdb()
    backend.flushdb()
    env = dict(os.environ, BENCH_BROKER=BROKER, BENCH_BACKEND=BACKEND)
    if kind == "celeriac":
        cmd = [binary, "--broker", BROKER, "--result-backend", BACKEND, "-Q", QUEUE,
               "-c", str(concurrency), "-n", "celeriac@bench", "--admin-addr", "127.0.0.1:0",
               "--loglevel", "warn", "--log-dir", "/tmp/celeriac-bench-logs"]
    else:
        cmd = [sys.executable, "-m", "celery", "-A", "echo_app", "worker", "-P", "prefork",
               "-c", str(concurrency), "-Q", QUEUE, "-n", "py@bench", "--loglevel", "WARNING",
               "--without-mingle", "--without-gossip", "--without-heartbeat"]
    worker = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Messages go to a staging list first and are renamed onto the queue in
        # one step, so the timer measures consuming, not publishing or booting.
        publish(n, QUEUE + "_staging")
        time.sleep(3)
        idle = rss_kb(worker.pid)
        broker.rename(QUEUE + "_staging", QUEUE)
        start, peak = time.monotonic(), idle
        deadline = start + 600
        while True:
            # The backend db holds only result keys: DBSIZE is O(1) and keeps
            # the poller from loading Redis while it measures.
            done = backend.dbsize()
            peak = max(peak, rss_kb(worker.pid))
            if done >= n:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{kind}: only {done}/{n} results after 600 s")
            time.sleep(0.02)
        elapsed = time.monotonic() - start
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    return {"worker": kind, "tasks": n, "seconds": round(elapsed, 3),
            "tasks_per_s": round(n / elapsed, 1), "rss_idle_mib": round(idle / 1024, 1),
            "rss_peak_mib": round(peak / 1024, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--binary", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "celeriac-worker"))
    a = ap.parse_args()
    results = [run("celeriac", a.tasks, a.concurrency, a.binary), run("python", a.tasks, a.concurrency, a.binary)]
    for r in results:
        print(json.dumps(r))
    ratio = results[0]["tasks_per_s"] / results[1]["tasks_per_s"]
    print(json.dumps({"throughput_ratio_celeriac_over_python": round(ratio, 2)}))


if __name__ == "__main__":
    main()
