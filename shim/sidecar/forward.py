"""``params`` delivery: forward an invocation to the long-running function with its secrets block.

The hot path of the sidecar. Per request it builds one request head, writes the snapshot's prebuilt
secrets block and then streams the body through untouched; the response is relayed to the caller raw,
as it arrives, with httptools only watching where it ends. Upstream connections are pooled keep-alive
sockets, so a warm invocation costs no connect, no task and no copy of the body.
See docs/protocol.md for the wire format.
"""

from __future__ import annotations

import asyncio
from typing import Callable

import httptools

from .cache import Snapshot
from .http import Exchange

REPLAY_LIMIT = 64 * 1024  # a request this small can be re-sent if a pooled connection turns out dead


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to the function; carries one ``Forward`` at a time."""

    def __init__(self, pool: "UpstreamPool") -> None:
        self._pool = pool
        self.transport: asyncio.Transport | None = None
        self.forward: Forward | None = None
        self.reused = False
        self._parser = httptools.HttpResponseParser(self)
        self._interim = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        forward = self.forward
        if forward is None:  # an idle connection has nothing to say
            self.close()
            return
        forward.response_data(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.forward = None
            self.close()
            forward.upstream_broken()

    def connection_lost(self, exc: Exception | None) -> None:
        self._pool.discard(self)
        self.transport = None
        forward, self.forward = self.forward, None
        if forward is not None:
            forward.upstream_lost(self)

    def pause_writing(self) -> None:
        if self.forward is not None:
            self.forward.exchange.connection.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.forward is not None:
            self.forward.exchange.connection.transport.resume_reading()

    # httptools callbacks
    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._interim = 100 <= status < 200
        forward = self.forward
        if forward is not None and not self._interim:
            forward.exchange.status = status
            if forward.exchange.method == b"HEAD":  # no body follows, whatever Content-Length says
                self._parser = httptools.HttpResponseParser(self)
                self._complete(keep_alive=True)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete(self._parser.should_keep_alive())

    def _complete(self, keep_alive: bool) -> None:
        forward, self.forward = self.forward, None
        if forward is None:
            return
        if keep_alive and forward.request_sent:
            self.reused = True
            self._pool.release(self)
        else:
            self.close()
        forward.response_done(close=not keep_alive)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """Idle keep-alive connections to one function address (LIFO, so the warmest is reused)."""

    def __init__(self, host: str, port: int, connect_timeout: float, max_idle: int = 100) -> None:
        self.host, self.port = host, port
        self._connect_timeout = connect_timeout or None
        self._max_idle = max_idle
        self._idle: list[UpstreamConnection] = []

    def take_idle(self) -> UpstreamConnection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port), self._connect_timeout
        )
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        if len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            conn.close()

    def discard(self, conn: UpstreamConnection) -> None:
        if conn in self._idle:
            self._idle.remove(conn)

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class Forward:
    """One invocation in flight to the function: the body sink and the response relay."""

    __slots__ = ("exchange", "_pool", "_conn", "_head", "_chunked", "_replay", "_responded", "_timer",
                 "_on_error", "_attached", "request_sent")

    def __init__(self, exchange: Exchange, snapshot: Snapshot, pool: UpstreamPool,
                 on_error: Callable[[Exchange, int, str], None]) -> None:
        self.exchange = exchange
        self._pool = pool
        self._on_error = on_error
        self._conn: UpstreamConnection | None = None
        self._responded = False
        self._timer: asyncio.TimerHandle | None = None
        self._attached = False
        self.request_sent = False
        block = snapshot.params_block()
        self._chunked = exchange.chunked
        self._head = _request_head(exchange, len(block)) + (_chunk(block) if self._chunked else block)
        self._replay: list[bytes] | None = [self._head]

    def start(self, exec_timeout: float) -> None:
        loop = asyncio.get_running_loop()
        if exec_timeout > 0:
            self._timer = loop.call_later(exec_timeout, self._timed_out)
        conn = self._pool.take_idle()
        if conn is not None:
            self._send_on(conn)
        else:
            loop.create_task(self._connect_and_send())

    async def _connect_and_send(self) -> None:
        try:
            conn = await self._pool.connect()
        except (OSError, asyncio.TimeoutError) as exc:
            self._fail(500, f"cannot reach the function at {self._pool.host}:{self._pool.port} ({type(exc).__name__})")
            return
        if self.exchange.finished:
            self._pool.release(conn)
            return
        self._send_on(conn)

    def _send_on(self, conn: UpstreamConnection) -> None:
        self._conn = conn
        conn.forward = self
        exchange = self.exchange
        exchange.connection.paused_by = self._client_paused
        if not self._attached:
            # Head, block and the body that has arrived so far leave in one write: usually the whole request.
            self._attached = True
            exchange.attach(self, flush=self._write_first)
        elif self._replay is not None:  # a retry: re-send everything seen so far
            conn.transport.write(b"".join(self._replay))

    def _write_first(self, held: list[bytes]) -> None:
        pieces = [_chunk(data) for data in held] if self._chunked else held
        if self._replay is not None:
            self._replay.extend(pieces)
        assert self._conn is not None and self._conn.transport is not None
        self._conn.transport.write(self._head + b"".join(pieces) if pieces else self._head)

    # BodySink: the caller's body, streamed to the function untouched
    def body(self, data: bytes) -> None:
        piece = _chunk(data) if self._chunked else data
        if self._replay is not None:
            self._replay.append(piece)
            if sum(map(len, self._replay)) > REPLAY_LIMIT:
                self._replay = None
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.write(piece)

    def end(self) -> None:
        if self._chunked:
            self.body(b"")  # the zero-length last chunk
        self._finish_request()

    def _finish_request(self) -> None:
        self.request_sent = True

    def cancel(self) -> None:
        """The caller left mid-request: the function would wait for the rest forever, so drop its connection."""
        self._cancel_timer()
        self._drop_connection()

    def _drop_connection(self) -> None:
        """Close the upstream connection, if it still carries this invocation (it may serve another now)."""
        conn = self._conn
        if conn is not None and conn.forward is self:
            conn.forward = None
            conn.close()

    # the function's answer, relayed raw
    def response_data(self, data: bytes) -> None:
        self._responded = True
        self.exchange.write(data)

    def response_done(self, close: bool) -> None:
        self._cancel_timer()
        self.exchange.finish(close=close)

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        """The connection closed under us: retry once if nothing came back yet and we can replay."""
        if self._responded:
            self._cancel_timer()
            self.exchange.abort()
        elif conn.reused and self._replay is not None:
            self._replay_on_new_connection()
        else:
            self._fail(500, "the function closed the connection without answering")

    def upstream_broken(self) -> None:
        self._cancel_timer()
        self.exchange.abort()

    def _replay_on_new_connection(self) -> None:
        self._conn = None
        asyncio.get_running_loop().create_task(self._connect_and_send())

    def _timed_out(self) -> None:
        self._timer = None
        self._drop_connection()
        if self._responded:
            self.exchange.abort()
        else:
            self._fail(504, "the function did not answer within exec_timeout")

    def _fail(self, status: int, message: str) -> None:
        self._cancel_timer()
        if not self.exchange.finished:
            self._on_error(self.exchange, status, message)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _client_paused(self, paused: bool) -> None:
        """Back-pressure: a slow caller slows the reading of the function's answer."""
        conn = self._conn
        if conn is not None and conn.transport is not None:
            (conn.transport.pause_reading if paused else conn.transport.resume_reading)()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def _request_head(exchange: Exchange, block_length: int) -> bytes:
    """The forwarded head: the caller's request line and headers, the new framing, Shim-Secrets."""
    # An HTTP/1.0 caller cannot read a chunked answer: asking as 1.0 makes the function frame it for 1.0.
    version = b" HTTP/1.0\r\n" if exchange.http_version == "1.0" else b" HTTP/1.1\r\n"
    lines = [exchange.method, b" ", exchange.target, version]
    for name, value in exchange.headers:
        lines += (name, b": ", value, b"\r\n")
    if exchange.chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    else:
        lines += (b"Content-Length: ", str((exchange.content_length or 0) + block_length).encode(), b"\r\n")
    lines += (b"Shim-Secrets: ", str(block_length).encode(), b"\r\n\r\n")
    return b"".join(lines)
