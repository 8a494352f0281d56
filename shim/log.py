"""Structured logs (structlog), with redaction as the very last step of every line.

The redactor runs on the *rendered* line, so whatever a value went through on its way (a field, a
formatted exception, relayed function output, JSON escaping), each occurrence of a value the sidecar
currently holds becomes ``[REDACTED]``. The set of values is swapped as a whole whenever the secret cache
changes, so no line is checked against a half-updated set.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, Iterable, TextIO

import structlog

REDACTED = "[REDACTED]"


class Redactor:
    """Replaces known secret values in text; the pattern is rebuilt only when the values change."""

    def __init__(self) -> None:
        self._pattern: re.Pattern[str] | None = None

    def set_values(self, values: Iterable[bytes]) -> None:
        forms: set[str] = set()
        for value in values:
            if not value:
                continue
            text = value.decode("utf-8", "backslashreplace")
            # A binary value delivered as an environment variable is a surrogate-escaped str in a
            # Python function; printed, its undecodable bytes read \udcXX.
            escaped = value.decode("utf-8", "surrogateescape").encode("utf-8", "backslashreplace").decode("utf-8")
            # As it may stand in a message: itself, inside repr(bytes), inside repr(str) ...
            for form in (text, repr(value)[2:-1], text.encode("unicode_escape").decode("ascii"), escaped):
                # ... and each of those as a JSON line escapes it.
                forms.update((form, json.dumps(form)[1:-1], json.dumps(form, ensure_ascii=False)[1:-1]))
        forms.discard("")
        ordered = sorted(forms, key=len, reverse=True)  # longest first: a value containing another goes whole
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def clear(self) -> None:
        self._pattern = None

    def text(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(REDACTED, text) if pattern is not None else text

    def __call__(self, logger: Any, method: str, line: str) -> str:
        """structlog processor, placed after the renderer: redact the finished line."""
        return self.text(line)


redactor = Redactor()


class _Timestamp:
    """ISO-8601 UTC with microseconds; the date and time part is formatted once a second, not per line."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        """An event may bring its own time (epoch seconds, a float): when it happened, not when it is logged."""
        at = event.get("timestamp")
        now = at if isinstance(at, float) else time.time()
        second = int(now)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["timestamp"] = f"{self._prefix}.{int((now - second) * 1e6):06d}Z"
        return event


class BatchedStream:
    """Collects log lines and writes them in one go when ``drain`` is called (the sidecar does, every
    100 ms and at exit), so a busy sidecar does not pay a write and a flush per invocation."""

    def __init__(self, target: TextIO) -> None:
        self._target = target
        self._lines: list[str] = []

    def write(self, text: str) -> None:
        self._lines.append(text)

    def flush(self) -> None:
        """structlog flushes after every line; the real flush is ``drain``."""

    def drain(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            self._target.write("".join(lines))
            self._target.flush()

    def isatty(self) -> bool:
        return self._target.isatty()


def configure(fmt: str = "auto", stream: TextIO | BatchedStream | None = None) -> None:
    """JSON lines (console on a TTY when ``fmt`` is auto); exceptions are rendered, then lines redacted."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer = (
        structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            _Timestamp(),
            structlog.processors.format_exc_info,
            renderer,
            redactor,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )


def get_logger(**bound: Any) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("shim").bind(**bound)
