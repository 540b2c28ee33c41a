"""Fake `python -m airflow.sdk.execution_time.execute_workload --json-string W`.

What it does is chosen by the workload's `ti.task_id`:
  ok[...]      JSON lines like the supervisor's, writes $AIRFLOW_HOME/logs/<log_path>, exit 0
  fail[...]    an "Unhandled exception" line, exit 1
  dup[...]     TaskAlreadyRunningError (a duplicate delivery), exit 1
  wait[...]    like ok, but first waits until $AIRFLOW_HOME/release-<ti.id> exists
  sleep[...]   sleeps 30 s (revoke/terminate tests), exit 0
Every run also prints {"event": "fake started", "pid", "started_at"}.
"""
import argparse
import json
import os
import sys
import time


def line(**kw):
    print(json.dumps(kw), flush=True)


def main():
    p = argparse.ArgumentParser()
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--json-string")
    g.add_argument("--json-path")
    a = p.parse_args()
    w = json.loads(a.json_string if a.json_string else open(a.json_path).read())
    ti = w.get("ti") or {}
    task = ti.get("task_id", "")
    line(event="fake started", pid=os.getpid(), pgid=os.getpgid(0), started_at=time.time(), type=w.get("type"))
    home = os.environ.get("AIRFLOW_HOME", ".")
    if task.startswith("wait"):
        release = os.path.join(home, f"release-{ti.get('id')}")
        deadline = time.time() + 60
        while not os.path.exists(release) and time.time() < deadline:
            time.sleep(0.05)
    if task.startswith("sleep"):
        time.sleep(30)
    if task.startswith("fail"):
        line(event="Unhandled exception", exc_type="ServerResponseError", exc_notes=["invalid_state"])
        sys.exit(1)
    if task.startswith("dup"):
        line(event="Unhandled exception", exc_type="TaskAlreadyRunningError", exc_notes=["previous_state: running"])
        sys.exit(1)
    if w.get("log_path"):
        path = os.path.join(home, "logs", w["log_path"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps({"event": "task ran", "ti": ti.get("id")}) + "\n")
    line(event="Workload finished", exit_code=0, final_state="success")


if __name__ == "__main__":
    main()
