"""``python -m shim_runtime [MODULE[:FUNCTION]]``: serve a handler behind ``shim run``."""

from .server import main

raise SystemExit(main())
