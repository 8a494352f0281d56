"""Demo for delivery ``env`` (fork per invocation): one process per request.

The sidecar runs ``python3 handler.py`` for every request, with the request body on stdin and
each bound key in the environment as ``SECRET_<SECRET>_<KEY>``; whatever the script prints is
the response. It prints the names of the SECRET_* variables it received (never their values)
and, to show a real value arrived, the value of any SECRET_*_GREETING variable.
Standard library only.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    body = sys.stdin.buffer.read()
    names = sorted(name for name in os.environ if name.startswith("SECRET_"))
    greetings = {name: os.environ[name] for name in names if name.endswith("_GREETING")}
    json.dump({"secrets": names, "greetings": greetings, "body_bytes": len(body)}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
