"""``python -m shim``: the same as the ``shim`` command."""

import sys

from .cli import main

sys.exit(main())
