"""The sidecar's in-memory view of its function's secrets, with a staleness bound.

A ``Snapshot`` is everything one invocation needs: the bound secrets' values and, computed once per
snapshot rather than per request, the ``params`` block and the ``env`` variables. ``SecretCache``
refreshes the snapshot when it is older than ``max_age`` seconds: it asks the source which secrets are
bound now (cheap) and re-reads only those whose version changed. A secret that is no longer bound is
simply not carried into the new snapshot, so its value is dropped with the old one.

Staleness bound: a snapshot is used only if its refresh *started* at most ``max_age`` seconds before
the invocation arrived, so any change made before that point is seen. ``max_age = 0`` fetches for
every invocation.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import BadInput, SecretUnavailable, ShimError
from ..names import env_names
from ..store import BoundSecret, SecretSource

PROTOCOL_VERSION = 1


@dataclass
class Snapshot:
    function: str
    secrets: dict[str, dict[str, bytes]]
    versions: dict[str, str]
    started_at: float
    _block: bytes | None = field(default=None, repr=False)
    _env: dict[str, str] | None = field(default=None, repr=False)
    _names: list[str] | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never show values, even in a debugger or a traceback
        return f"Snapshot(function={self.function!r}, secrets={sorted(self.secrets)!r})"

    @property
    def names(self) -> list[str]:
        if self._names is None:
            self._names = sorted(self.secrets)
        return self._names

    def params_block(self) -> bytes:
        """The JSON block of docs/protocol.md, built once per snapshot."""
        if self._block is None:
            text: dict[str, dict[str, str]] = {}
            binary: dict[str, dict[str, str]] = {}
            for name, data in self.secrets.items():
                for key, value in data.items():
                    try:
                        text.setdefault(name, {})[key] = value.decode("utf-8")
                    except UnicodeDecodeError:
                        binary.setdefault(name, {})[key] = base64.b64encode(value).decode("ascii")
            block = {"v": PROTOCOL_VERSION, "function": self.function, "secrets": text, "binary": binary}
            self._block = json.dumps(block, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return self._block

    def environment(self) -> dict[str, str]:
        """``SECRET_<SECRET>_<KEY>`` variables; BadInput if two keys map to one name or a value has NUL."""
        if self._env is None:
            env: dict[str, str] = {}
            for var, (name, key) in env_names(self.secrets).items():
                value = self.secrets[name][key]
                if b"\0" in value:
                    raise BadInput(f"secret {name!r} key {key!r} holds a NUL byte and cannot be an environment variable")
                env[var] = value.decode("utf-8", "surrogateescape")
            self._env = env
        return self._env

    def values(self) -> list[bytes]:
        return [v for data in self.secrets.values() for v in data.values()]


class SecretCache:
    """Single-flight refresh of one function's secrets; ``on_change`` sees each new snapshot."""

    def __init__(
        self,
        source: SecretSource,
        max_age: float,
        on_change: Callable[[Snapshot | None], None] = lambda snapshot: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._max_age = max_age
        self._on_change = on_change
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._bound_names: list[str] = []  # names only, from the last answer of the store
        self._refresh: asyncio.Task[Snapshot] | None = None
        self._refresh_started = 0.0

    def fresh(self) -> Snapshot | None:
        """The snapshot if it may serve an invocation arriving now; the hot path's only cost."""
        snapshot = self._snapshot
        if snapshot is not None and self._clock() - snapshot.started_at < self._max_age:
            return snapshot
        return None

    def invalidate(self) -> None:
        """Forget freshness (not values): the next invocation refreshes. Safe from the loop thread only."""
        if self._snapshot is not None:
            self._snapshot.started_at = float("-inf")

    async def get(self) -> Snapshot:
        """A snapshot whose refresh started no earlier than ``max_age`` before this call."""
        arrival = self._clock()
        snapshot = self.fresh()
        if snapshot is not None:
            return snapshot
        while True:
            task = self._refresh
            if task is not None and not task.done():
                if self._refresh_started >= arrival - self._max_age:
                    return await asyncio.shield(task)
                await asyncio.wait([task])  # too old for us: let it finish, then start our own
                continue
            started = self._clock()
            self._refresh_started = started
            self._refresh = asyncio.ensure_future(self._load(started))
            return await asyncio.shield(self._refresh)

    async def _load(self, started: float) -> Snapshot:
        previous = self._snapshot
        try:
            snapshot = await asyncio.to_thread(self._read, previous, started)
        except SecretUnavailable:
            # Fail closed and hold nothing we can no longer vouch for (unbound, function deleted, store down).
            self.clear()
            raise
        if self._snapshot is None or self._snapshot.started_at <= started:
            self._snapshot = snapshot
            self._on_change(snapshot)
        return snapshot

    def _read(self, previous: Snapshot | None, started: float) -> Snapshot:
        """In a worker thread: list bindings, re-read what changed, fail closed naming the secret."""
        try:
            bound = self._source.bound()
        except Exception as exc:
            # Name what is at stake: the secrets bound when the store last answered (names are not secret).
            reason = f": {exc}" if isinstance(exc, ShimError) else f" ({type(exc).__name__})"
            known = self._bound_names
            listed = f" ({', '.join(known)})" if known else ""
            raise SecretUnavailable(f"cannot list the function's bound secrets{listed}{reason}",
                                    known[0] if known else None) from None
        self._bound_names = sorted(item.name for item in bound)
        secrets: dict[str, dict[str, bytes]] = {}
        versions: dict[str, str] = {}
        for item in bound:
            if previous is not None and previous.versions.get(item.name) == item.version:
                secrets[item.name] = previous.secrets[item.name]
            else:
                secrets[item.name] = self._read_one(item)
            versions[item.name] = item.version
        return Snapshot(self._source.function.__str__(), secrets, versions, started)

    def _read_one(self, item: BoundSecret) -> dict[str, bytes]:
        try:
            return dict(self._source.read(item))
        except ShimError as exc:
            raise SecretUnavailable(f"cannot fetch secret {item.name!r}: {exc}", item.name) from None
        except Exception as exc:
            raise SecretUnavailable(f"cannot fetch secret {item.name!r} ({type(exc).__name__})", item.name) from None

    def clear(self) -> None:
        """Drop every value (shutdown, function gone, store unreachable)."""
        self._snapshot = None
        self._on_change(None)

    def drop_if_stale(self) -> None:
        """Called periodically: values unused for longer than the bound are not kept around."""
        if self._snapshot is not None and self.fresh() is None:
            self.clear()
