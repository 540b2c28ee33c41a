"""A stand-in for Apache Airflow in celeriac's tests: just enough of the
modules celeriac-worker runs. CELERIAC_FAKE_IMPORT_SECONDS makes importing
it as slow as the real one (1.7-2.8 s) for the warm-pool timing test."""
import os
import time

_delay = float(os.environ.get("CELERIAC_FAKE_IMPORT_SECONDS") or 0)
if _delay:
    time.sleep(_delay)
