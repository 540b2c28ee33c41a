"""Send one task by name from a Python client and print its id.

usage: send_task.py NAME ARGS_JSON [KWARGS_JSON]
"""

import json
import os
import sys

from interop_app import app


def main():
    name, args = sys.argv[1], json.loads(sys.argv[2])
    kwargs = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    result = app.send_task(name, args=args, kwargs=kwargs)
    sys.stdout.write(result.id + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
