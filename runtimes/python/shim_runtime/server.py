"""The long-running HTTP server behind ``shim run`` (delivery ``params``): ``python -m shim_runtime``.

It reads each request's body, splits off the secrets block (``protocol``), calls the handler
with ``event`` and ``context`` (``event``), and sends its return value (``response``).

Design notes:

- HTTP/1.1 keep-alive with a Content-Length on every response, because the sidecar pools
  connections; a request whose framing we cannot trust closes its connection instead.
- One thread per connection (``ThreadingHTTPServer``): handlers may run concurrently.
- Nothing about a request is logged except a handler's failure, and that traceback has the
  call's secret values replaced by ``[REDACTED]`` first (see ``redact``).
- SIGTERM (and SIGINT) stop accepting, let in-flight calls finish (up to ``SHUTDOWN_TIMEOUT``
  seconds, default 10) and exit 0. Idle keep-alive connections do not delay the exit.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .event import Context, Event, Headers, secrets_view
from .protocol import HEADER, ProtocolError, split_payload
from .redact import redact
from .response import InvalidResponse, Response, build_response

Handler = Callable[[Event, Context], Any]

DEFAULT_TARGET = "handler:handle"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_SHUTDOWN_TIMEOUT = 10.0

# Bodies are read in pieces of this size, so a bogus huge Content-Length or chunk size costs
# nothing until the bytes actually arrive.
_READ_PIECE = 1 << 20
# Limits on the chunked framing lines (size line with extensions, trailer lines).
_MAX_LINE = 64 * 1024
_MAX_TRAILERS = 100
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")

_log_lock = threading.Lock()


def _log(text: str) -> None:
    """Write one message to stderr. Callers pass only text that is safe to log."""
    with _log_lock:
        sys.stderr.write(f"shim-runtime: {text}\n")
        sys.stderr.flush()


class _BadFraming(Exception):
    """The body's framing cannot be trusted: answer ``status`` and close the connection,
    since we do not know where the next request would start."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _ClientGone(Exception):
    """The connection ended before the whole body arrived."""


def _error(status: int, message: str) -> Response:
    """A short JSON error response. ``message`` must be fixed text, never request data."""
    body = json.dumps({"error": message}).encode("utf-8")
    return Response(status=status, headers=[("Content-Type", "application/json")], body=body)


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def call_handler(handler: Handler, event: Event, context: Context) -> Response:
    """Run the handler (sync or async) and map its result, or its failure, to a response.

    A failure is logged with its traceback, redacted with this call's secrets; the caller only
    learns the exception type. The traceback object (whose frames reference ``context``) is
    released when the ``except`` block ends.
    """
    try:
        result = handler(event, context)
        if inspect.isawaitable(result):
            # A fresh event loop per call: simple, and correct from any server thread.
            result = asyncio.run(_await(result))
    except (Exception, SystemExit) as exc:
        name = type(exc).__name__
        text = "".join(traceback.format_exception(exc))
        _log(redact(f"handler raised {name}\n{text}".rstrip("\n"), context.secrets))
        return _error(500, f"handler raised {name}")
    try:
        return build_response(result)
    except InvalidResponse as exc:
        _log(redact(f"invalid handler response: {exc}", context.secrets))
        return _error(500, "handler returned an invalid response")


class RequestHandler(BaseHTTPRequestHandler):
    """One connection; every supported method invokes the function."""

    protocol_version = "HTTP/1.1"
    server_version = "shim-runtime"
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle plus delayed ACKs
    # add ~40 ms to each small response on a kept-alive connection.
    disable_nagle_algorithm = True
    server: RuntimeServer

    def version_string(self) -> str:
        """``Server: shim-runtime``, without the Python version the default advertises."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base class name)
        """Silenced: the default access log (and its error lines, which quote the request line)
        is not wanted next to a sidecar that decides what is logged."""

    def _invoke(self) -> None:
        with self.server.tracked():
            self._send(self._respond())

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _invoke

    def _respond(self) -> Response:
        try:
            payload = self._read_body()
        except _BadFraming as exc:
            self.close_connection = True
            return _error(exc.status, exc.message)
        except _ClientGone:
            self.close_connection = True
            return _error(400, "incomplete request body")
        try:
            block, body = split_payload(self.headers.get_all(HEADER) or [], payload)
        except ProtocolError as exc:
            return _error(exc.status, exc.message)
        del payload  # the only other copy of the block's bytes
        if block is None:
            context = Context()
        else:
            context = Context(secrets=secrets_view(block.secrets), function=block.function)
        return call_handler(self.server.handler, self._event(body), context)

    # -- reading the request ---------------------------------------------------------------

    def _read_body(self) -> bytes:
        """Read the whole forwarded body (Content-Length or chunked)."""
        te_values = self.headers.get_all("Transfer-Encoding") or []
        cl_values = self.headers.get_all("Content-Length") or []
        if te_values:
            if cl_values:
                raise _BadFraming(400, "both Transfer-Encoding and Content-Length")
            codings = [c.strip().lower() for v in te_values for c in v.split(",") if c.strip()]
            if codings != ["chunked"]:
                raise _BadFraming(501, "unsupported Transfer-Encoding")
            return self._read_chunked()
        if cl_values:
            distinct = {value.strip() for value in cl_values}
            text = distinct.pop()
            if distinct or not text.isascii() or not text.isdigit() or len(text) > 18:
                raise _BadFraming(400, "invalid Content-Length")
            return self._read_exact(int(text))
        return b""

    def _read_exact(self, length: int) -> bytes:
        pieces: list[bytes] = []
        remaining = length
        while remaining:
            piece = self.rfile.read(min(remaining, _READ_PIECE))
            if not piece:
                raise _ClientGone
            pieces.append(piece)
            remaining -= len(piece)
        return b"".join(pieces)

    def _read_line(self) -> bytes:
        line = self.rfile.readline(_MAX_LINE + 1)
        if not line:
            raise _ClientGone
        if len(line) > _MAX_LINE or not line.endswith(b"\n"):
            raise _BadFraming(400, "invalid chunked body")
        return line

    def _read_chunked(self) -> bytes:
        """Decode a chunked body. Chunk boundaries carry no meaning: the block may span chunks."""
        pieces: list[bytes] = []
        while True:
            size_text = self._read_line().split(b";", 1)[0].strip()
            if not size_text or len(size_text) > 16 or not set(size_text) <= _HEX_DIGITS:
                raise _BadFraming(400, "invalid chunked body")
            size = int(size_text, 16)
            if size == 0:
                break
            pieces.append(self._read_exact(size))
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise _BadFraming(400, "invalid chunked body")
        for _ in range(_MAX_TRAILERS + 1):  # trailers are read and dropped
            if self._read_line() in (b"\r\n", b"\n"):
                return b"".join(pieces)
        raise _BadFraming(400, "invalid chunked body")

    def _event(self, body: bytes) -> Event:
        """The caller's request: ``Shim-Secrets`` removed, ``Content-Length`` = the caller's."""
        target = self.path
        if target.startswith(("http://", "https://")):  # absolute-form request target
            parts = urlsplit(target)
            path, query = parts.path or "/", parts.query
        else:
            path, _, query = target.partition("?")
        params: dict[str, str] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            params.setdefault(key, value)

        pairs: list[tuple[str, str]] = []
        length_done = False
        for name, value in self.headers.items():
            lowered = name.lower()
            if lowered == HEADER.lower():
                continue
            if lowered == "content-length":
                if length_done:
                    continue
                value, length_done = str(len(body)), True
            pairs.append((name, value))
        return Event(
            body=body,
            headers=Headers(pairs),
            method=self.command,
            path=path,
            query=params,
            query_string=query,
        )

    # -- writing the response --------------------------------------------------------------

    def _send(self, response: Response) -> None:
        """Send a response with an exact Content-Length (none for 204/304, which have no body)."""
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        has_body = response.status not in (204, 304)
        if has_body:
            self.send_header("Content-Length", str(len(response.body)))
        if self.server.stopping:
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if has_body and self.command != "HEAD" and response.body:
            self.wfile.write(response.body)


class RuntimeServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its handler and its in-flight calls."""

    # Daemon connection threads are not joined on close: an idle pooled keep-alive connection
    # would otherwise hold up shutdown forever. In-flight calls are waited for by ``drain``.
    daemon_threads = True
    # The listen backlog (socketserver's default is 5): bursts of new pooled connections from
    # the sidecar should queue, not be refused.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: Handler) -> None:
        self.handler = handler
        self.stopping = False
        self._inflight = 0
        self._idle = threading.Condition()
        super().__init__(address, RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS lookup that can stall start-up.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log one line, not the default traceback: a closed connection is routine."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            _log(f"connection error: {type(exc).__name__}")

    @contextmanager
    def tracked(self) -> Iterator[None]:
        """Count a call as in flight for the duration of the block."""
        with self._idle:
            self._inflight += 1
        try:
            yield
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait until no call is in flight; False if ``timeout`` seconds pass first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)

    def stop(self) -> None:
        """Stop accepting (safe to call from a signal handler, and more than once)."""
        if not self.stopping:
            self.stopping = True
            # shutdown() waits for serve_forever() to return; from the signal handler, which
            # runs in the serving thread, that would deadlock, so it runs in its own thread.
            threading.Thread(target=self.shutdown, daemon=True).start()


class _RuntimeServer6(RuntimeServer):
    address_family = socket.AF_INET6


def make_server(host: str, port: int, handler: Handler) -> RuntimeServer:
    """Bind (``port`` 0 picks a free port; read it from ``server.server_port``)."""
    cls = _RuntimeServer6 if ":" in host else RuntimeServer
    return cls((host, port), handler)


class HandlerLoadError(Exception):
    """The handler named on the command line cannot be found."""


def load_handler(target: str) -> Handler:
    """Import ``MODULE[:FUNCTION]`` (function ``handle`` by default).

    The working directory goes first on ``sys.path``, so ``handler.py`` next to where the
    runtime is started is found even when the interpreter was told not to add it (``-P``).
    """
    module_name, _, attribute = target.partition(":")
    attribute = attribute or "handle"
    if not module_name:
        raise HandlerLoadError(f"no module in handler {target!r} (expected MODULE[:FUNCTION])")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise HandlerLoadError(f"cannot find handler module {module_name!r} (working directory {cwd})") from None
        raise
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HandlerLoadError(f"module {module_name!r} has no {attribute!r}") from None
    if not callable(obj):
        raise HandlerLoadError(f"{target!r} is not callable")
    return obj


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise ValueError(f"invalid port {text!r} (expected 0-65535)")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m shim_runtime``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m shim_runtime",
        description="Serve a function handler behind shim (params delivery, docs/protocol.md).",
    )
    parser.add_argument("target", nargs="?", default=DEFAULT_TARGET,
                        help=f"MODULE[:FUNCTION] to serve (default {DEFAULT_TARGET})")
    parser.add_argument("--host", help=f"address to listen on (env HOST, default {DEFAULT_HOST})")
    parser.add_argument("--port", help=f"port to listen on (env PORT, default {DEFAULT_PORT}; 0 = any free)")
    args = parser.parse_args(argv)

    host = args.host or os.environ.get("HOST") or DEFAULT_HOST
    try:
        port = _port(args.port or os.environ.get("PORT") or str(DEFAULT_PORT))
        grace = float(os.environ.get("SHUTDOWN_TIMEOUT") or DEFAULT_SHUTDOWN_TIMEOUT)
    except ValueError as exc:
        print(f"shim-runtime: {exc}", file=sys.stderr)
        return 2
    try:
        handler = load_handler(args.target)
    except HandlerLoadError as exc:
        print(f"shim-runtime: {exc}", file=sys.stderr)
        return 2
    try:
        server = make_server(host, port, handler)
    except OSError as exc:
        print(f"shim-runtime: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    shown = f"[{host}]" if ":" in host else host
    _log(f"serving {args.target} on http://{shown}:{server.server_port}")
    try:
        server.serve_forever()
    finally:
        server.server_close()
    if not server.drain(grace):
        _log(f"exiting with calls still in flight after {grace:g}s")
    return 0
