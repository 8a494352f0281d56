"""HTTP/1.1 on the client side of the sidecar, at the protocol level (asyncio + httptools).

This layer knows framing, keep-alive, pipelining order and the watchdog's own endpoints; it knows
nothing of secrets. Each parsed request becomes an ``Exchange``: its head is ready when the headers
are complete, its body streams through whatever ``BodySink`` the delivery attaches (chunks that arrive
earlier are held until then), and the response is written back raw with ``write``/``finish``.

Incoming ``Shim-*`` headers and hop-by-hop headers are dropped while parsing, so no later layer can
forward them by mistake: a caller can never inject or read what carries the secrets.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from http import HTTPStatus
from typing import Callable, Protocol

import httptools

# Headers that describe one hop, or carry shim's own protocol: never forwarded as received.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
     b"content-length", b"expect"}
)
SHIM_PREFIX = b"shim-"
MAX_HEAD_BYTES = 1024 * 1024  # as the watchdog's MaxHeaderBytes


class BodySink(Protocol):
    def body(self, data: bytes) -> None: ...
    def end(self) -> None: ...
    def cancel(self) -> None:
        """The exchange was aborted (the caller went away): stop waiting for more body."""


class Exchange:
    """One request and its response on a client connection."""

    __slots__ = ("connection", "method", "target", "headers", "http_version", "keep_alive", "content_length",
                 "chunked", "started", "status", "secret_names", "_sink", "_held", "_ended", "_finished",
                 "_head_size", "on_finish")

    def __init__(self, connection: "ClientConnection") -> None:
        self.connection = connection
        self.method = b""
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.http_version = "1.1"
        self.keep_alive = True
        self.content_length: int | None = None
        self.chunked = False
        self.started = time.monotonic()
        self.status = 0
        self.secret_names: list[str] = []
        self._sink: BodySink | None = None
        self._held: list[bytes] = []
        self._ended = False
        self._finished = False
        self._head_size = 0
        self.on_finish: Callable[[Exchange], None] | None = None

    # -- request side -------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self.target.split(b"?", 1)[0].decode("latin-1")

    @property
    def query(self) -> str:
        parts = self.target.split(b"?", 1)
        return parts[1].decode("latin-1") if len(parts) == 2 else ""

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def attach(self, sink: BodySink, flush: Callable[[list[bytes]], None] | None = None) -> None:
        """Route the body to ``sink``: first what arrived already, then the rest as it comes.

        ``flush``, if given, takes the chunks that arrived already all at once (one write instead of many).
        """
        self._sink = sink
        held, self._held = self._held, []
        if flush is not None:
            flush(held)
        else:
            for chunk in held:
                sink.body(chunk)
        if self._ended:
            sink.end()

    def _body(self, data: bytes) -> None:
        if self._sink is not None:
            self._sink.body(data)
        elif not self._finished:
            self._held.append(data)

    def _end(self) -> None:
        self._ended = True
        if self._sink is not None:
            self._sink.end()

    @property
    def body_complete(self) -> bool:
        return self._ended

    # -- response side ------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self._finished

    def write(self, data: bytes) -> None:
        if not self._finished:
            self.connection.transport.write(data)

    def finish(self, close: bool = False) -> None:
        """The response is complete; ``close`` when the connection cannot carry another one."""
        if self._finished:
            return
        self._finished = True
        if self.on_finish is not None:
            self.on_finish(self)
        self.connection.exchange_finished(self, close or not self.keep_alive)

    def abort(self) -> None:
        """A response broke midway: the only honest signal left is closing the connection."""
        if not self._finished:
            self.status = self.status or 502
            self._finished = True
            if self.on_finish is not None:
                self.on_finish(self)
            if self._sink is not None and not self._ended:
                self._sink.cancel()
            self.connection.close()

    def respond(self, status: int, body: bytes = b"", content_type: str = "text/plain; charset=utf-8",
                headers: tuple[tuple[str, str], ...] = ()) -> None:
        """A complete response built here (health, errors, fork modes)."""
        self.status = status
        close = not self.keep_alive or (self.has_body and not self._ended)  # unread body: cannot reuse
        head = [f"HTTP/1.1 {status} {_reason(status)}\r\n", f"Content-Length: {len(body)}\r\n"]
        if body or content_type:
            head.append(f"Content-Type: {content_type}\r\n")
        head.extend(f"{k}: {v}\r\n" for k, v in headers)
        if close:
            head.append("Connection: close\r\n")
        head.append("\r\n")
        self.write("".join(head).encode("latin-1") + (b"" if self.method == b"HEAD" else body))
        self.finish(close=close)

    def respond_json(self, status: int, document: dict, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.respond(status, json.dumps(document).encode() + b"\n", "application/json", headers)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class ClientConnection(asyncio.Protocol):
    """Parses requests from one client and runs their exchanges one at a time, in order."""

    def __init__(self, dispatch: Callable[[Exchange], None], connections: set["ClientConnection"]) -> None:
        self._dispatch = dispatch
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[Exchange] = deque()
        self._current: Exchange | None = None
        self._closing = False
        self.last_active = time.monotonic()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.paused_by: Callable[[bool], None] | None = None  # back-pressure hook of the active delivery

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(501, "protocol upgrades are not supported")
            return
        except httptools.HttpParserError:
            self._reject(400, "malformed HTTP request")
            return
        # A request whose body is still on its way starts now, with the part that arrived in hand.
        if self._current is None:
            self._start_next()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._connections.discard(self)
        for exchange in [self._current, *self._queue]:
            if exchange is not None and not exchange.finished:
                exchange.abort()

    def pause_writing(self) -> None:
        if self.paused_by is not None:
            self.paused_by(True)

    def resume_writing(self) -> None:
        if self.paused_by is not None:
            self.paused_by(False)

    # -- httptools callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._incoming = Exchange(self)
        self._head_bytes = 0
        self._expect_continue = False

    def on_url(self, url: bytes) -> None:
        self._incoming.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self._incoming
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise ValueError("request head too large")
        lower = name.lower()
        if lower == b"content-length":
            exchange.content_length = int(value)
        elif lower == b"transfer-encoding":
            exchange.chunked = b"chunked" in value.lower()
        elif lower == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True
        if lower in HOP_BY_HOP or lower.startswith(SHIM_PREFIX):
            return
        exchange.headers.append((name, value))

    def on_headers_complete(self) -> None:
        exchange = self._incoming
        parser = self._parser
        exchange.method = parser.get_method()
        exchange.http_version = parser.get_http_version()
        exchange.keep_alive = parser.should_keep_alive()
        if self._expect_continue and exchange.has_body:  # the caller waits for this before sending the body
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # Not started yet: a body that came in the same packet then leaves with the head in one write.
        self._queue.append(exchange)

    def on_body(self, body: bytes) -> None:
        self._incoming._body(body)

    def on_message_complete(self) -> None:
        self._incoming._end()
        if self._current is None:
            self._start_next()

    # -- exchanges ----------------------------------------------------------------------------
    def _start_next(self) -> None:
        if self._queue and not self._closing:
            self._current = self._queue.popleft()
            self._dispatch(self._current)

    def exchange_finished(self, exchange: Exchange, close: bool) -> None:
        self.paused_by = None
        if close:
            self.close()
            return
        if exchange is self._current:
            self._current = None
            self._start_next()

    @property
    def idle(self) -> bool:
        """No request in progress: the connection only waits for the caller's next request."""
        return self._current is None and not self._queue

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self.transport.close()

    def _reject(self, status: int, message: str) -> None:
        line = f"HTTP/1.1 {status} {_reason(status)}\r\nContent-Type: text/plain\r\nContent-Length: {len(message) + 1}\r\nConnection: close\r\n\r\n{message}\n"
        self.transport.write(line.encode())
        self.close()
