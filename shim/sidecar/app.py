"""The sidecar's lifecycle and its one-way invocation path.

request in (``http.ClientConnection``) -> identity (this sidecar's ``SecretSource``, opened with the
function's own credential) -> bindings and fetch (``cache.SecretCache``) -> deliver and forward
(``forward.Forward`` for ``params``, ``fork.ForkRunner`` for ``env``) -> respond, and one log event.

Lifecycle as the OpenFaaS watchdog: listen at once, write the lock file and report healthy when the
function can be reached; on SIGTERM report unhealthy, wait ``healthcheck_interval``, drain for at most
``write_timeout``, stop the function, drop every value, exit.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from ..config import SidecarConfig
from ..errors import BadInput, SecretUnavailable
from ..log import BatchedStream, get_logger, redactor
from ..store import SecretSource
from .cache import SecretCache, Snapshot
from .fork import ForkRunner
from .forward import Forward, UpstreamPool
from .http import ClientConnection, Exchange
from .process import FunctionProcess, child_environment

REDACT_GRACE = 60.0  # seconds a value is still redacted from output after the sidecar let go of it
LIMIT_BODY = "Concurrent request limit exceeded. Max concurrent requests: {}\n"


class Sidecar:
    def __init__(self, config: SidecarConfig, source: SecretSource, log_stream: BatchedStream | None = None) -> None:
        self.config = config
        self.log_stream = log_stream
        self.source = source
        self.log = get_logger(function=str(config.function))
        self.cache = SecretCache(source, config.cache_ttl, on_change=self._secrets_changed)
        self.accepting = False
        self.inflight = 0
        self.connections: set[ClientConnection] = set()
        self._invocations: list[tuple[float, float, Exchange]] = []  # finished, not yet logged
        self._held: set[bytes] = set()  # the values of the current snapshot
        self._retired: dict[bytes, float] = {}  # values no longer held -> when they stopped being held
        # $TMPDIR, else /tmp: Go's os.TempDir(), as the watchdog. Not tempfile.gettempdir(), which
        # probes the directory by creating and writing a randomly named file in it.
        self.lock_path = Path(os.environ.get("TMPDIR") or "/tmp") / ".lock"
        self.function: FunctionProcess | None = None
        if config.mode == "http":
            host, port = config.upstream_host_port
            self.pool: UpstreamPool | None = UpstreamPool(host, port, config.exec_timeout)
            self.fork: ForkRunner | None = None
        else:
            self.pool, self.fork = None, ForkRunner(config)

    # -- the invocation path ------------------------------------------------------------------
    def dispatch(self, exchange: Exchange) -> None:
        """Called by the connection for each request, in order; a bug here costs one 500, not the sidecar."""
        try:
            self._dispatch(exchange)
        except Exception:
            self._crashed(exchange)

    def _crashed(self, exchange: Exchange) -> None:
        self.log.exception("invocation failed inside the sidecar")
        if not exchange.finished:
            self._error(exchange, 500, "internal error in the sidecar")

    def _dispatch(self, exchange: Exchange) -> None:
        path = exchange.path
        if path == "/_/health":
            return self._health(exchange)
        if path == "/_/ready":
            return self._ready(exchange)
        limit = self.config.max_inflight
        if limit and self.inflight >= limit:
            exchange.respond(429, LIMIT_BODY.format(limit).encode(), "text/plain",
                             (("X-OpenFaaS-Internal", "faas-middleware"),))
            return
        self.inflight += 1
        exchange.on_finish = self._finished
        snapshot = self.cache.fresh()
        if snapshot is not None:
            self._deliver(exchange, snapshot)
        else:
            asyncio.get_running_loop().create_task(self._fetch_then_deliver(exchange))

    async def _fetch_then_deliver(self, exchange: Exchange) -> None:
        try:
            snapshot = await self.cache.get()
            if not exchange.finished:
                self._deliver(exchange, snapshot)
        except SecretUnavailable as exc:
            self._refuse(exchange, str(exc), exc.secret)
        except Exception:
            self._crashed(exchange)

    def _deliver(self, exchange: Exchange, snapshot: Snapshot) -> None:
        exchange.secret_names = snapshot.names
        try:
            if self.pool is not None:
                Forward(exchange, snapshot, self.pool, self._error).start(self.config.exec_timeout)
            else:
                assert self.fork is not None
                self.fork.start(exchange, snapshot)
        except BadInput as exc:  # e.g. two keys that map to one environment variable
            self._refuse(exchange, str(exc), None)

    def _refuse(self, exchange: Exchange, message: str, secret: str | None) -> None:
        """Fail closed: nothing is forwarded; the answer names the secret, never a value."""
        self.log.warning("secrets unavailable", error=message, secret=secret)
        exchange.respond_json(503, {"error": message, "secret": secret})

    def _error(self, exchange: Exchange, status: int, message: str) -> None:
        exchange.respond(status, message.encode() + b"\n", "text/plain; charset=utf-8",
                         (("X-OpenFaaS-Internal", "shim"),))

    def _finished(self, exchange: Exchange) -> None:
        """Record the invocation; its log event is rendered right after this turn of the event loop."""
        self.inflight -= 1
        if not self._invocations:
            asyncio.get_running_loop().call_soon(self._log_invocations)
        self._invocations.append((time.time(), time.monotonic() - exchange.started, exchange))

    def _log_invocations(self) -> None:
        """One structlog event per invocation, stamped with when it finished. Rendered after the loop has
        handled the I/O that was ready, the few invocations that finished together: not in the middle of
        answering them, and never a long batch that would stall every caller behind it."""
        done, self._invocations = self._invocations, []
        for at, duration, exchange in done:
            self.log.info("invocation", timestamp=at, method=exchange.method.decode("latin-1"), path=exchange.path,
                          status=exchange.status, duration_ms=round(duration * 1000, 3), secrets=exchange.secret_names)

    def _secrets_changed(self, snapshot: Snapshot | None) -> None:
        """Keep the redactor in step with what the function may print.

        A function can print a value after the cache let go of it (rotated, unbound, dropped as stale),
        e.g. when its block-buffered stdout is flushed at exit. So a value that stops being held stays in
        the redactor for ``REDACT_GRACE`` seconds more, then is forgotten, as the cache forgot it."""
        held = set(snapshot.values()) if snapshot is not None else set()
        if held == self._held:
            return
        now = time.monotonic()
        for value in self._held - held:
            self._retired[value] = now
        for value in held:
            self._retired.pop(value, None)
        self._held = held
        redactor.set_values(held | self._retired.keys())

    def _forget_retired(self, now: float) -> None:
        expired = [v for v, since in self._retired.items() if now - since > REDACT_GRACE]
        if expired:
            for value in expired:
                del self._retired[value]
            redactor.set_values(self._held | self._retired.keys())

    # -- the watchdog's endpoints -------------------------------------------------------------
    def _healthy(self) -> bool:
        return self.accepting and (self.config.suppress_lock or self.lock_path.exists())

    def _health(self, exchange: Exchange) -> None:
        if exchange.method != b"GET":
            exchange.respond(405, b"")
        elif self._healthy():
            exchange.respond(200, b"OK")
        else:
            exchange.respond(503, b"")

    def _ready(self, exchange: Exchange) -> None:
        limit = self.config.max_inflight
        if exchange.method != b"GET":
            exchange.respond(405, b"")
        elif not self._healthy():
            exchange.respond(503, b"")
        elif limit and self.inflight >= limit:
            exchange.respond(429, b"", "")
        else:
            exchange.respond(200, b"", "")

    # -- lifecycle ----------------------------------------------------------------------------
    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._unexpected)
        # A backend that notices changes (a Kubernetes watch) shortens the wait below the staleness bound.
        self.source.watch(lambda: loop.call_soon_threadsafe(self.cache.invalidate))
        server = await loop.create_server(
            lambda: ClientConnection(self.dispatch, self.connections),
            self.config.host, self.config.port, reuse_address=True, backlog=1024,
        )
        self.log.info("listening", port=self.config.port, mode=self.config.mode, inject=self.config.inject,
                      cache_ttl=self.config.cache_ttl)
        stop = asyncio.Event()
        exit_code = 0
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        waiters = [asyncio.ensure_future(stop.wait())]
        if self.config.mode == "http" and self.config.fprocess:
            self.function = FunctionProcess(self.config.fprocess, self._function_env(), self.config.prefix_logs)
            await self.function.start()
            waiters.append(asyncio.ensure_future(self.function.wait()))
        sweeper = loop.create_task(self._sweep())
        starting = loop.create_task(self._become_ready())
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if waiters[0] not in done:  # the function process ended: as the watchdog, the sidecar ends too
            code = waiters[1].result()
            self.log.error("function process exited", code=code)
            exit_code = 1
        starting.cancel()
        sweeper.cancel()
        await self._shutdown(server, graceful=exit_code == 0)
        return exit_code

    def _unexpected(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        """asyncio's own error reports go through the redacting log too, never straight to stderr."""
        error = context.get("exception")
        self.log.error("unexpected error", message=context.get("message"),
                       exc_info=(type(error), error, error.__traceback__) if error else None)

    def _function_env(self) -> dict[str, str]:
        _, port = self.config.upstream_host_port
        return child_environment(os.environ, {"PORT": str(port)})

    async def _become_ready(self) -> None:
        if self.pool is not None:
            await self._wait_for_upstream()
        try:
            await self.cache.get()  # warm, so the first invocation is fast; failures are per invocation
        except SecretUnavailable as exc:
            self.log.warning("secrets not fetched at start", error=str(exc), secret=exc.secret)
        if not self.config.suppress_lock:
            self.lock_path.touch(mode=0o660)
        self.accepting = True
        self.log.info("ready")

    async def _wait_for_upstream(self) -> None:
        assert self.pool is not None
        deadline = time.monotonic() + self.config.upstream_start_timeout
        while True:
            try:
                conn = await self.pool.connect()
                self.pool.release(conn)
                return
            except (OSError, asyncio.TimeoutError):
                if time.monotonic() > deadline:
                    self.log.error("function not reachable", upstream=self.config.upstream_url)
                    return
                await asyncio.sleep(0.05)

    async def _sweep(self) -> None:
        """Every 100 ms: write out batched log lines, close idle connections; every max(ttl, 1 s): drop stale values."""
        interval, last = max(self.config.cache_ttl, 1.0), time.monotonic()
        while True:
            await asyncio.sleep(0.1)
            if self.log_stream is not None:
                self.log_stream.drain()
            now = time.monotonic()
            self._close_idle_connections(now)
            if now - last >= interval:
                last = now
                self.cache.drop_if_stale()
                self._forget_retired(now)

    def _close_idle_connections(self, now: float) -> None:
        """As the watchdog's read timeout: a caller silent for ``read_timeout`` between requests is let go."""
        timeout = self.config.read_timeout
        if timeout > 0:
            for connection in [c for c in self.connections if c.idle and now - c.last_active > timeout]:
                connection.close()

    async def _shutdown(self, server: asyncio.AbstractServer, graceful: bool) -> None:
        self.accepting = False
        if not self.config.suppress_lock:
            self.lock_path.unlink(missing_ok=True)
        if graceful and self.config.healthcheck_interval > 0:
            self.log.info("SIGTERM: no new connections", after_s=self.config.healthcheck_interval)
            await asyncio.sleep(self.config.healthcheck_interval)
        server.close()
        deadline = time.monotonic() + self.config.write_timeout
        while graceful and self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.close()
        if self.pool is not None:
            self.pool.close()
        if self.function is not None:
            await self.function.stop(grace=self.config.write_timeout)
            try:  # its last output (flushed at exit) is still relayed, and redacted
                await asyncio.wait_for(self.function.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
        self.cache.clear()
        self.source.close()
        self._log_invocations()
        self.log.info("stopped", inflight=self.inflight)
        self._held.clear()
        self._retired.clear()
        redactor.clear()
