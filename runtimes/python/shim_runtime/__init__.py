"""shim_runtime: the function-side half of shim's ``params`` delivery (docs/protocol.md).

Run a handler with ``python -m shim_runtime [MODULE[:FUNCTION]]`` (default ``handler:handle``).
A handler is ``def handle(event, context)`` (or ``async def``):

- ``event.body`` (bytes), ``event.headers`` (case-insensitive, no ``Shim-Secrets``),
  ``event.method``, ``event.path``, ``event.query`` (first values), ``event.query_string``;
- ``context.secrets``: secret name -> key -> value (``str``, or ``bytes`` for binary values),
  ``context.function``, ``context.hostname``.

It returns a ``str``/``bytes`` body, ``None``, or a dict with ``statusCode``, ``body`` and
``headers``. Standard library only.

Secrets live only in the call's ``context``: not in the environment, files or globals. Their
repr shows names and keys, not values. When a handler raises, the caller gets
``{"error": "handler raised <Type>"}`` and the traceback goes to stderr with every secret value
of that call replaced by ``[REDACTED]`` (exception messages may quote values; see ``redact``).
"""

from .event import Context, Event, Headers
from .protocol import ProtocolError, SecretsBlock, parse_block, split_payload

__version__ = "0.1.0"

__all__ = [
    "Context",
    "Event",
    "Headers",
    "ProtocolError",
    "SecretsBlock",
    "parse_block",
    "split_payload",
    "__version__",
]
