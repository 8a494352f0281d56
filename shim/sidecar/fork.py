"""``env`` delivery: a process per invocation, its secrets in its own environment only.

Two of the watchdog's fork modes: ``serializing`` (body read whole, written to stdin, stdout read whole;
200, or 500 with the error) and ``streaming`` (stdin and stdout streamed; 200 once started). The child's
environment is the sidecar's minus its credentials, the watchdog's ``Http_*`` request variables, and each
bound key as ``SECRET_<SECRET>_<KEY>``. Values are handed to ``execve`` directly: they never enter the
sidecar's own environment, a command line or a file.
"""

from __future__ import annotations

import asyncio
import os
import time

from ..config import SidecarConfig
from .cache import Snapshot
from .http import Exchange
from .process import child_environment, relay_output


class BodyQueue:
    """A body sink the fork modes can await, chunk by chunk."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def body(self, data: bytes) -> None:
        self._queue.put_nowait(data)

    def end(self) -> None:
        self._queue.put_nowait(None)

    cancel = end  # the caller left: the function gets end-of-input, its answer goes nowhere

    async def chunks(self):
        while (chunk := await self._queue.get()) is not None:
            yield chunk

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])


def request_environment(exchange: Exchange) -> dict[str, str]:
    """The watchdog's CGI-style variables: ``Http_<Canonical_Header>`` (first value), method, path, query."""
    env: dict[str, str] = {}
    for name, value in exchange.headers:
        key = "Http_" + "_".join(part.capitalize() for part in name.decode("latin-1").split("-"))
        env.setdefault(key, value.decode("latin-1"))
    env["Http_Method"] = exchange.method.decode("latin-1")
    if exchange.path:
        env["Http_Path"] = exchange.path
    if exchange.query:
        env["Http_Query"] = exchange.query
    return env


class ForkRunner:
    """Runs ``fprocess`` once per invocation in the configured fork mode."""

    def __init__(self, config: SidecarConfig) -> None:
        self._config = config
        self._base_env = dict(os.environ)

    def start(self, exchange: Exchange, snapshot: Snapshot) -> asyncio.Task[None]:
        env = child_environment(self._base_env, {**request_environment(exchange), **snapshot.environment()})
        body = BodyQueue()
        exchange.attach(body)
        run = self._serializing if self._config.mode == "serializing" else self._streaming
        return asyncio.get_running_loop().create_task(run(exchange, body, env))

    async def _spawn(self, env: dict[str, str]) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *self._config.fprocess, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
        asyncio.get_running_loop().create_task(relay_output(process.stderr, "stderr", self._config.prefix_logs))
        return process

    def _timeout(self) -> float | None:
        return self._config.exec_timeout or None

    async def _serializing(self, exchange: Exchange, body: BodyQueue, env: dict[str, str]) -> None:
        started = time.monotonic()
        data = await body.read_all()
        try:
            process = await self._spawn(env)
        except OSError as exc:
            exchange.respond(500, f"cannot start the function: {exc.strerror}\n".encode())
            return
        try:
            stdout = await asyncio.wait_for(self._communicate(process, data), self._timeout())
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            exchange.respond(500, b"signal: killed\n")
            return
        if process.returncode != 0:
            exchange.respond(500, _exit_text(process.returncode).encode() + b"\n")
            return
        duration = f"{time.monotonic() - started:.6f}"
        exchange.respond(200, stdout, self._config.content_type, (("X-Duration-Seconds", duration),))

    async def _streaming(self, exchange: Exchange, body: BodyQueue, env: dict[str, str]) -> None:
        try:
            process = await self._spawn(env)
        except OSError as exc:
            exchange.respond(500, f"cannot start the function: {exc.strerror}\n".encode())
            return
        exchange.status = 200
        exchange.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: " + self._config.content_type.encode("latin-1")
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        feeding = asyncio.get_running_loop().create_task(self._feed(process, body))
        try:
            await asyncio.wait_for(self._relay_stdout(exchange, process), self._timeout())
            code = await asyncio.wait_for(process.wait(), self._timeout())
        except asyncio.TimeoutError:
            process.kill()
            code = await process.wait()
        feeding.cancel()
        if code != 0:  # the status is sent; a truncated body (closed connection) is the only signal left
            exchange.status = 500
            exchange.abort()
            return
        exchange.write(b"0\r\n\r\n")
        exchange.finish(close=not exchange.body_complete)

    @staticmethod
    async def _communicate(process: asyncio.subprocess.Process, data: bytes) -> bytes:
        """stdin in, stdout out, then the exit. Not ``communicate()``: that would also read stderr,
        which ``relay_output`` is already reading (two readers of one stream raise RuntimeError)."""
        assert process.stdout is not None
        whole = BodyQueue()
        whole.body(data)
        whole.end()
        feeding = asyncio.get_running_loop().create_task(ForkRunner._feed(process, whole))
        try:
            stdout = await process.stdout.read()
            await feeding
        finally:
            feeding.cancel()
        await process.wait()
        return stdout

    @staticmethod
    async def _feed(process: asyncio.subprocess.Process, body: BodyQueue) -> None:
        assert process.stdin is not None
        try:
            async for chunk in body.chunks():
                process.stdin.write(chunk)
                await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the function did not read all of its input: as the watchdog, not an error
        finally:
            process.stdin.close()

    @staticmethod
    async def _relay_stdout(exchange: Exchange, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while chunk := await process.stdout.read(64 * 1024):
            exchange.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))


def _exit_text(code: int) -> str:
    """Go's ``err.Error()`` wording, as the watchdog returns it."""
    return f"signal: {_signal_name(-code)}" if code < 0 else f"exit status {code}"


def _signal_name(number: int) -> str:
    import signal

    try:
        return {signal.SIGKILL: "killed", signal.SIGTERM: "terminated"}.get(signal.Signals(number), signal.Signals(number).name)
    except ValueError:
        return str(number)
