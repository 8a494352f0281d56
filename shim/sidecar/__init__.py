"""``shim run``: the sidecar in front of one function.

Modules, in the order a request flows through them: ``http`` (client protocol) -> ``app`` (dispatch,
lifecycle) -> ``cache`` (bindings and values, staleness bound) -> ``forward`` (``params`` delivery) or
``fork`` (``env`` delivery); ``process`` starts function processes.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Sequence

from .. import config as config_module
from ..errors import BadInput, ShimError
from ..log import BatchedStream, configure, get_logger


def _harden() -> None:
    """No core dumps and no same-user ptrace of a process that holds secrets (Linux, best effort)."""
    try:
        import ctypes
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        PR_SET_DUMPABLE = 4
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, ValueError, AttributeError, ImportError):
        pass


def _warn_if_shared(credential_path: str) -> None:
    """As ssh does for private keys: a credential others may read is worth a warning, not a refusal
    (a platform may mount it group-readable on purpose)."""
    try:
        mode = os.stat(credential_path).st_mode
    except OSError:
        return  # the backend reports a missing or unreadable credential with the right exit status
    if mode & 0o077:
        get_logger().warning("the function credential is readable by other users", path=credential_path,
                             mode=oct(mode & 0o777))


def run_main(argv: Sequence[str]) -> int:
    """Parse the configuration once, open this function's source with its own credential, serve."""
    from ..store import open_source
    from .app import Sidecar

    try:
        config = config_module.load(argv, os.environ)
    except BadInput as exc:
        print(f"shim: error: {exc}", file=sys.stderr)
        return 2
    log_stream = BatchedStream(sys.stderr)
    configure(config.log_format, log_stream)
    _harden()
    _warn_if_shared(config.function_key)
    try:
        source = open_source(config.store_url, config.function, config.function_key)
    except ShimError as exc:
        print(f"shim: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, BadInput) else 1
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return runner(Sidecar(config, source, log_stream).serve())
    except OSError as exc:  # e.g. the port is taken
        get_logger().error("cannot serve", error=f"{type(exc).__name__}: {exc.strerror or exc}")
        return 1
    finally:
        log_stream.drain()
