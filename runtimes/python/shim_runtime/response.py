"""Turning a handler's return value into an HTTP response (status, headers, body), with no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

_TEXT = "text/plain; charset=utf-8"
_BINARY = "application/octet-stream"
_JSON = "application/json"

# The runtime frames every response itself; a handler's own values for these would contradict it.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
_RESPONSE_KEYS = frozenset({"statusCode", "body", "headers"})


class InvalidResponse(Exception):
    """The handler returned something this runtime cannot send. The message names the problem
    (types and key names only, never values) for the function's log."""


@dataclass
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def _has_header(headers: list[tuple[str, str]], name: str) -> bool:
    return any(key.lower() == name for key, _ in headers)


def _body_bytes(body: Any) -> tuple[bytes, str | None]:
    """Encode a body; return it with the content type it implies (None for an empty body)."""
    if body is None:
        return b"", None
    if isinstance(body, str):
        return body.encode("utf-8"), _TEXT
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body), _BINARY
    if isinstance(body, (dict, list)):
        try:
            return json.dumps(body).encode("utf-8"), _JSON
        except (TypeError, ValueError) as exc:
            raise InvalidResponse(f"body is not JSON serialisable ({type(exc).__name__})") from None
    raise InvalidResponse(f"body of type {type(body).__name__} (expected str, bytes, dict, list or None)")


def _check_header(name: str, value: str) -> None:
    """Refuse CR/LF/NUL in header text: they would let handler data split the response."""
    for text in (name, value):
        if any(char in text for char in "\r\n\0"):
            raise InvalidResponse("header name or value contains a line break")
    if not name or any(char in name for char in " \t:"):
        raise InvalidResponse("invalid header name")


def _headers(raw: Any) -> list[tuple[str, str]]:
    """Normalise the ``headers`` of a dict response: a value may be a list for repeated headers."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise InvalidResponse(f"headers of type {type(raw).__name__} (expected dict)")
    result: list[tuple[str, str]] = []
    for name, value in raw.items():
        if not isinstance(name, str):
            raise InvalidResponse("header name is not a string")
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            text = str(item)
            _check_header(name, text)
            if name.lower() not in _FRAMING_HEADERS:
                result.append((name, text))
    return result


def build_response(result: Any) -> Response:
    """Map a handler's return value to a response.

    - ``None``: empty 200.
    - ``str`` / ``bytes``: 200 with that body (``text/plain; charset=utf-8`` /
      ``application/octet-stream``).
    - ``dict``: ``statusCode`` (default 200), ``body`` (str, bytes, None, or dict/list sent as
      JSON) and ``headers``. Other keys are refused rather than ignored, so that returning a
      plain data dict fails loudly instead of answering an empty 200.
    """
    if result is None:
        return Response()
    if isinstance(result, (str, bytes, bytearray, memoryview)):
        body, content_type = _body_bytes(result)
        return Response(headers=[("Content-Type", content_type or _TEXT)], body=body)
    if not isinstance(result, dict):
        raise InvalidResponse(
            f"handler returned {type(result).__name__} (expected str, bytes, dict or None)"
        )

    unknown = set(result) - _RESPONSE_KEYS
    if unknown:
        names = ", ".join(sorted(repr(key) if isinstance(key, str) else f"<{type(key).__name__}>" for key in unknown))
        raise InvalidResponse(f"response dict has unknown keys {names} (allowed: statusCode, body, headers)")

    status = result.get("statusCode", 200)
    if type(status) is not int or not 200 <= status <= 599:
        raise InvalidResponse("statusCode must be an int from 200 to 599")
    headers = _headers(result.get("headers"))
    body, content_type = _body_bytes(result.get("body"))
    if content_type and not _has_header(headers, "content-type"):
        headers.append(("Content-Type", content_type))
    return Response(status=status, headers=headers, body=body)
