"""`airflow tasks run …` (Airflow 2): prints what it got as one JSON line.
Exits with the code in CELERIAC_FAKE_EXIT (default 0)."""
import json
import os
import sys

print(json.dumps({"argv": sys.argv[1:], "external_executor_id": os.environ.get("external_executor_id")}), flush=True)
sys.exit(int(os.environ.get("CELERIAC_FAKE_EXIT") or 0))
