"""Parsing of the ``params`` delivery protocol (docs/protocol.md), with no I/O.

The sidecar announces a secrets block with ``Shim-Secrets: N`` and puts the ``N``-byte block in
front of the caller's body. Everything here works on bytes already read, so that it can be unit
tested without sockets and reused by any server.

Error messages never quote the block or the header value: a malformed block may still hold secret
values, and error messages end up in responses and logs.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: The request header that announces the block (matched case-insensitively).
HEADER = "Shim-Secrets"
#: The only protocol version this runtime understands.
VERSION = 1

#: A secret value: text when it was valid UTF-8, bytes otherwise.
SecretValue = str | bytes
#: Secret name -> key -> value.
Secrets = dict[str, dict[str, SecretValue]]

# A length needs at most this many digits; anything longer is refused before int() sees it,
# so a hostile header cannot make us convert a huge string.
_MAX_LENGTH_DIGITS = 18


class ProtocolError(Exception):
    """The request does not follow the protocol.

    ``status`` is the HTTP status to answer with: 400 for a request we cannot parse, 500 for a
    block of a version we do not know (the protocol asks for 500 there: the sidecar and the
    runtime disagree, which is a deployment fault, not the caller's). ``message`` is short, fixed
    text that is safe to send back and to log.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class SecretsBlock:
    """A parsed block: the function's name and its secrets (text and binary merged)."""

    version: int
    function: str
    # repr=False: a block printed by accident must not show its values.
    secrets: Secrets = field(repr=False)


def parse_length(values: Sequence[str]) -> int | None:
    """Return ``N`` from the ``Shim-Secrets`` header values, or None when the header is absent.

    ``values`` are all occurrences of the header. More than one is refused: two lengths would
    make the start of the body ambiguous. The value must be a plain non-negative decimal integer
    (ASCII digits only; ``+1``, ``1.0``, ``0x10`` and Unicode digits are refused).
    """
    if not values:
        return None
    if len(values) > 1:
        raise ProtocolError(400, "more than one Shim-Secrets header")
    text = values[0].strip(" \t")
    if not text or not text.isascii() or not text.isdigit() or len(text) > _MAX_LENGTH_DIGITS:
        raise ProtocolError(400, "Shim-Secrets must be a non-negative integer")
    return int(text)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses duplicate keys instead of keeping the last one.

    A block is security relevant; two readings of one block (first wins vs. last wins) must not
    be possible.
    """
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ProtocolError(400, "malformed secrets block: duplicate key")
        result[key] = value
    return result


def _secret_map(block: dict[str, Any], section: str) -> dict[str, dict[str, str]]:
    """Return ``block[section]`` checked to be name -> key -> string (absent means empty)."""
    value = block.get(section, {})
    if not isinstance(value, dict):
        raise ProtocolError(400, f"malformed secrets block: '{section}' is not an object")
    for keys in value.values():
        if not isinstance(keys, dict):
            raise ProtocolError(400, f"malformed secrets block: '{section}' entry is not an object")
        for item in keys.values():
            if not isinstance(item, str):
                raise ProtocolError(400, f"malformed secrets block: '{section}' value is not a string")
    return value


def parse_block(data: bytes) -> SecretsBlock:
    """Parse and validate the UTF-8 JSON block; decode the base64 of the ``binary`` map.

    The version is checked before the rest of the shape: a block of an unknown version may
    legitimately look different, and the protocol says to answer 500 for it.
    """
    try:
        block = json.loads(data.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # JSONDecodeError is a ValueError; its message quotes positions only, but we still
        # use fixed text so that nothing from the block can ever reach a response.
        raise ProtocolError(400, "malformed secrets block: not UTF-8 JSON") from None
    if not isinstance(block, dict):
        raise ProtocolError(400, "malformed secrets block: not a JSON object")

    version = block.get("v")
    # type() rather than isinstance(): JSON true would otherwise pass as version 1.
    if type(version) is not int or version != VERSION:
        raise ProtocolError(500, "unsupported secrets protocol version")

    function = block.get("function", "")
    if not isinstance(function, str):
        raise ProtocolError(400, "malformed secrets block: 'function' is not a string")

    text = _secret_map(block, "secrets")
    binary = _secret_map(block, "binary")

    secrets: Secrets = {name: dict(keys) for name, keys in text.items()}
    for name, keys in binary.items():
        merged = secrets.setdefault(name, {})
        for key, encoded in keys.items():
            if key in merged:
                raise ProtocolError(400, "malformed secrets block: key is both text and binary")
            try:
                merged[key] = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise ProtocolError(400, "malformed secrets block: 'binary' value is not base64") from None
    return SecretsBlock(version=version, function=function, secrets=secrets)


def split_payload(header_values: Sequence[str], payload: bytes) -> tuple[SecretsBlock | None, bytes]:
    """Split a forwarded request body into (block, the caller's body).

    ``header_values`` are all ``Shim-Secrets`` values of the request; ``payload`` is the whole
    forwarded body (already de-chunked). Without the header the request did not come through
    shim: no block, and the payload is the body unchanged.
    """
    length = parse_length(header_values)
    if length is None:
        return None, payload
    if length > len(payload):
        raise ProtocolError(400, "Shim-Secrets is larger than the request body")
    return parse_block(payload[:length]), payload[length:]
