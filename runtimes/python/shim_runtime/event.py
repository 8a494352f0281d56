"""What a handler receives: ``event`` (the caller's request) and ``context`` (secrets and metadata).

Both are built fresh for every call and dropped when it ends; the secrets are referenced from
nowhere else, so they live exactly as long as the call (plus whatever the handler keeps itself).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from .protocol import SecretValue


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive request headers that keep repeated headers.

    ``headers["content-type"]`` gives the first value (like ``email.message.Message``),
    ``get_all(name)`` gives every value, ``raw_items()`` gives all (name, value) pairs in order.
    Iterating yields each name once, in the case it was first sent.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._pairs: tuple[tuple[str, str], ...] = tuple(pairs)
        self._first: dict[str, tuple[str, str]] = {}
        for name, value in self._pairs:
            self._first.setdefault(name.lower(), (name, value))

    def __getitem__(self, name: str) -> str:
        if not isinstance(name, str):
            raise KeyError(name)
        return self._first[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._first.values())

    def __len__(self) -> int:
        return len(self._first)

    def get_all(self, name: str, default: list[str] | None = None) -> list[str] | None:
        """Every value of ``name`` in order, or ``default`` when there is none."""
        lowered = name.lower()
        values = [value for key, value in self._pairs if key.lower() == lowered]
        return values or default

    def raw_items(self) -> list[tuple[str, str]]:
        """All (name, value) pairs as received, repeats included."""
        return list(self._pairs)

    def __repr__(self) -> str:
        return f"Headers({list(self._pairs)!r})"


class _RedactedDict(dict):  # type: ignore[type-arg]
    """A dict whose repr shows keys but not values.

    ``print(context)`` or ``logging.debug("%r", context.secrets)`` is an easy mistake to make in
    a handler; it should not be the one that puts a password into the logs. Everything else
    (indexing, iteration, ``json.dumps``) behaves as a plain dict.
    """

    def __repr__(self) -> str:
        # Nested maps (a secret's keys) are shown with their own redacted repr.
        items = (f"{key!r}: {value!r}" if isinstance(value, _RedactedDict) else f"{key!r}: <redacted>"
                 for key, value in self.items())
        return "{" + ", ".join(items) + "}"

    __str__ = __repr__


def secrets_view(secrets: Mapping[str, Mapping[str, SecretValue]]) -> dict[str, dict[str, SecretValue]]:
    """Wrap parsed secrets for the handler: name -> key -> value, with values kept out of repr."""
    return _RedactedDict({name: _RedactedDict(keys) for name, keys in secrets.items()})


@dataclass
class Event:
    """The caller's request, exactly as the caller sent it (the block removed)."""

    #: The caller's body, byte for byte.
    body: bytes = field(repr=False)
    #: Request headers without ``Shim-Secrets``; ``Content-Length`` is the caller's length.
    headers: Headers
    method: str
    #: The path as on the request line, without the query (percent-encoding left as sent).
    path: str
    #: Query parameters, first value of each, percent-decoded.
    query: dict[str, str]
    #: The raw query string (without ``?``), for repeated parameters or exact bytes.
    query_string: str


def _hostname() -> str:
    """The host name, as the OpenFaaS templates report it (``HOSTNAME`` first)."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


@dataclass
class Context:
    """Per-call parameters: the function's secrets and where it runs."""

    #: Secret name -> key -> value (``str`` for text, ``bytes`` for binary). Empty when the
    #: request did not come through shim.
    secrets: dict[str, dict[str, SecretValue]] = field(default_factory=dict)
    #: The function's full name from the block (``org/namespace/name``), or "" without a block.
    function: str = ""
    hostname: str = field(default_factory=_hostname)

    def __repr__(self) -> str:
        names = sorted(self.secrets)
        return f"Context(function={self.function!r}, hostname={self.hostname!r}, secrets={names!r})"
