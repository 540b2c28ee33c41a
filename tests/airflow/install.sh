#!/usr/bin/env bash
# Install Apache Airflow 3.3.2 with the Celery provider into a venv, the way
# shared/spec/airflow.md §1 says works on this machine (three pins/extras are
# needed: celery < 5.7, asyncpg, psycopg2-binary). Idempotent: a venv with a
# matching stamp is reused. Prints the venv's python path on stdout last.
#
#   tests/airflow/install.sh            # venv at $CELERIAC_AIRFLOW_VENV or <target>/airflow-venv
#   CELERIAC_AIRFLOW_VENV=/x tests/airflow/install.sh
set -euo pipefail

target="${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/target}"
venv="${CELERIAC_AIRFLOW_VENV:-$target/airflow-venv}"
python="${CELERIAC_AIRFLOW_BASE_PYTHON:-python3}"
pins=(apache-airflow==3.3.2 apache-airflow-providers-celery 'celery[redis]>=5.5,<5.7'
      asyncpg psycopg2-binary redis)
stamp="$venv/.celeriac-airflow-ready"
want="${pins[*]}"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$venv/bin/python"
  exit 0
fi

exec 9>"$venv.lock"
flock 9
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv" >&2
  "$venv/bin/pip" install --disable-pip-version-check --no-input \
    --timeout 60 --retries 3 "${pins[@]}" >&2
  # Fail here, not in the first task: the module the worker runs must import.
  "$venv/bin/python" -c 'import airflow.sdk.execution_time.execute_workload, celery; print("airflow ok, celery", celery.__version__)' >&2
  printf '%s' "$want" > "$stamp"
fi
echo "$venv/bin/python"
