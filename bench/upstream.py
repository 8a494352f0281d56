"""A minimal, fast HTTP/1.1 keep-alive "function" for the benchmark.

One process, one asyncio event loop (uvloop when installed), one ``asyncio.Protocol`` per connection and
httptools for parsing. Every request is read completely (Content-Length or chunked: httptools decodes
both) and answered ``200`` with a short fixed body. A body that starts with a ``Shim-Secrets: N`` block is
just body to this server: it does not use the secrets, it only counts them, so the benchmark can prove
that the sidecar really injected a block.

``GET /__stats`` (not counted) answers JSON::

    {"requests": total, "with_secrets": n, "bad_blocks": n, "last_block": {...}}

``last_block`` describes the most recent block: its length, protocol version, function and the *names*
of its secrets and keys (never the values). ``bad_blocks`` counts requests whose ``Shim-Secrets`` length
did not fit in the body.

Usage: python bench/upstream.py --port 8081 [--host 127.0.0.1]
Prints ``READY <port>`` on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

import httptools

RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 3\r\n"
    b"\r\n"
    b"ok\n"
)
RESPONSE_CLOSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 3\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"ok\n"
)
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Stats:
    requests = 0
    with_secrets = 0
    bad_blocks = 0
    last_block: bytes | None = None

    @classmethod
    def describe(cls) -> dict:
        info: dict = {
            "requests": cls.requests,
            "with_secrets": cls.with_secrets,
            "bad_blocks": cls.bad_blocks,
            "last_block": None,
        }
        if cls.last_block is not None:
            desc: dict = {"length": len(cls.last_block)}
            try:
                block = json.loads(cls.last_block)
                desc["v"] = block.get("v")
                desc["function"] = block.get("function")
                desc["secrets"] = {k: sorted(v) for k, v in (block.get("secrets") or {}).items()}
                desc["binary"] = {k: sorted(v) for k, v in (block.get("binary") or {}).items()}
            except (ValueError, AttributeError) as exc:
                desc["error"] = f"block is not the expected JSON: {exc}"
            info["last_block"] = desc
        return info


class HttpProtocol(asyncio.Protocol):
    __slots__ = ("transport", "parser", "url", "secrets_len", "body", "closing")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.secrets_len = -1
        self.body: list[bytes] = []
        self.closing = False

    # --- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail()
        except httptools.HttpParserError:
            self._fail()

    def connection_lost(self, exc) -> None:  # type: ignore[override]
        self.transport = None

    def _fail(self) -> None:
        if self.transport is not None and not self.closing:
            self.closing = True
            self.transport.write(BAD_REQUEST)
            self.transport.close()

    # --- httptools callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.secrets_len = -1
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 12 and name.lower() == b"shim-secrets":
            try:
                self.secrets_len = int(value)
            except ValueError:
                self.secrets_len = -2

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        transport = self.transport
        if transport is None or self.closing:
            return
        if self.url == b"/__stats":
            payload = json.dumps(Stats.describe()).encode()
            transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(payload)).encode()
                + b"\r\n\r\n"
                + payload
            )
        else:
            Stats.requests += 1
            n = self.secrets_len
            if n != -1:
                body = b"".join(self.body) if len(self.body) != 1 else self.body[0]
                if 0 <= n <= len(body):
                    Stats.with_secrets += 1
                    Stats.last_block = body[:n]
                else:
                    Stats.bad_blocks += 1
            self.body = []
            if self.parser.should_keep_alive():
                transport.write(RESPONSE)
                return
            transport.write(RESPONSE_CLOSE)
        if not self.parser.should_keep_alive():
            self.closing = True
            transport.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    args = ap.parse_args()

    loop_name = "asyncio"
    if not args.no_uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            loop_name = "uvloop"
        except ImportError:
            pass

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(HttpProtocol, args.host, args.port, backlog=1024, reuse_address=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"READY {args.port} {loop_name}", flush=True)
        async with server:
            await stop.wait()

    asyncio.run(serve())
    sys.exit(0)


if __name__ == "__main__":
    main()
