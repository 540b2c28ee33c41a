"""Import tracer for bench/airflow.md: which modules each Airflow process imports, and when.

Put this directory on PYTHONPATH (the e2e harness does it for every process of the stack
with `CELERIAC_E2E_PYTHONPATH=$PWD/bench/import_trace`): an audit hook appends
`<unix time> <parent pid> <module>` to `$CELERIAC_IMPORT_TRACE_DIR/<pid>.log` (default
/tmp/celeriac-imports) for every import. A forked child keeps the hook, so the logs of a
worker's task processes show what each task imported that its parent had not — what a warm
pool should preload. Diagnostics only: the hook costs a file append per import.
"""

import os
import sys
import time

_DIR = os.environ.get("CELERIAC_IMPORT_TRACE_DIR", "/tmp/celeriac-imports")


def _hook(event, args):
    if event != "import":
        return
    try:
        with open(f"{_DIR}/{os.getpid()}.log", "a") as f:
            f.write(f"{time.time():.4f} {os.getppid()} {args[0]}\n")
    except OSError:
        pass


os.makedirs(_DIR, exist_ok=True)
sys.addaudithook(_hook)
