"""Scrubbing secret values out of text before it is logged.

The runtime logs a handler's traceback when it raises. ``traceback.format_exception`` shows no
local variables, but exception *messages* are arbitrary text: ``KeyError(password)``,
``ValueError(f"cannot connect with {dsn}")`` or a driver error that quotes its connection string
all put a value into the message. So before logging, every value of the call's secrets is
replaced by ``[REDACTED]``.

This is best effort against accidents, not a guarantee: a value that was transformed (hashed,
truncated, re-encoded in a way not listed below) cannot be recognised. Every non-empty value is
redacted, even a one-character one; a traceback full of ``[REDACTED]`` is the price of never
printing a short password.
"""

from __future__ import annotations

from collections.abc import Mapping

from .protocol import SecretValue

REDACTED = "[REDACTED]"


def _spellings(value: SecretValue) -> set[str]:
    """The ways ``value`` can show up in formatted text.

    Text appears as itself or escaped as in a repr (``KeyError`` messages are reprs, and a value
    with a newline or quote is then escaped). Bytes appear as the inside of their repr
    (``b'...'``), or decoded byte-per-character when printed raw.
    """
    if isinstance(value, bytes):
        forms = {repr(value)[2:-1], value.decode("latin-1")}
    else:
        forms = {value, repr(value)[1:-1], ascii(value)[1:-1]}
    return {form for form in forms if form}


def redact(text: str, secrets: Mapping[str, Mapping[str, SecretValue]]) -> str:
    """Return ``text`` with every spelling of every secret value replaced by ``[REDACTED]``.

    All occurrences of all spellings are located in the original text first (overlaps
    included) and each merged stretch is replaced once. Replacing values one after another
    would let one value's replacement hide part of an overlapping value and leave the rest of
    it in clear, and would rescan ``[REDACTED]`` itself (a value such as ``RED`` would mangle it).
    """
    needles: set[str] = set()
    for keys in secrets.values():
        for value in keys.values():
            needles |= _spellings(value)
    spans: list[tuple[int, int]] = []
    for needle in needles:
        start = text.find(needle)
        while start != -1:
            spans.append((start, start + len(needle)))
            start = text.find(needle, start + 1)
    if not spans:
        return text
    spans.sort()
    pieces: list[str] = []
    position = 0
    current_start, current_end = spans[0]
    for start, end in spans[1:]:
        if start <= current_end:
            current_end = max(current_end, end)
            continue
        pieces += [text[position:current_start], REDACTED]
        position = current_end
        current_start, current_end = start, end
    pieces += [text[position:current_start], REDACTED, text[current_end:]]
    return "".join(pieces)
