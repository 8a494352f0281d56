"""Starting function processes: the environment they get, and their output relayed to the log.

Children get the sidecar's environment *minus its own credentials* (every ``SHIM_*`` variable and
backend tokens), plus whatever the delivery adds for them. Their stdout/stderr lines go through the
same redaction as shim's own log lines, so a function printing a secret does not leak it into the logs.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Mapping

from ..log import get_logger, redactor

# Credentials of the sidecar itself: never inherited by a function process.
_WITHHELD_PREFIXES = ("SHIM_",)
_WITHHELD = frozenset({"VAULT_TOKEN", "BAO_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID"})


def child_environment(base: Mapping[str, str], extra: Mapping[str, str] = {}) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in _WITHHELD and not k.startswith(_WITHHELD_PREFIXES)}
    env.update(extra)
    return env


async def relay_output(stream: asyncio.StreamReader, name: str, prefix: bool) -> None:
    """Copy a child's output to our stderr line by line, redacted (prefix_logs as the watchdog)."""
    log = get_logger()
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line longer than the buffer: take what is there
            line = await stream.read(64 * 1024)
        if not line:
            return
        text = line.decode("utf-8", "backslashreplace").rstrip("\n")
        if prefix:
            log.info("function output", stream=name, line=text)
        else:
            sys.stderr.write(redactor.text(text) + "\n")
            sys.stderr.flush()


class FunctionProcess:
    """The long-running function (mode=http): started once, its exit ends the sidecar."""

    def __init__(self, argv: tuple[str, ...], env: Mapping[str, str], prefix_logs: bool) -> None:
        self._argv = argv
        self._env = env
        self._prefix = prefix_logs
        self.process: asyncio.subprocess.Process | None = None
        self._relays: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self._argv, env=dict(self._env), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
        assert self.process.stdout and self.process.stderr
        self._relays = [
            asyncio.create_task(relay_output(self.process.stdout, "stdout", self._prefix)),
            asyncio.create_task(relay_output(self.process.stderr, "stderr", self._prefix)),
        ]

    async def wait(self) -> int:
        assert self.process is not None
        code = await self.process.wait()
        await asyncio.gather(*self._relays, return_exceptions=True)
        return code

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signum)

    async def stop(self, grace: float) -> None:
        import signal

        if self.process is None or self.process.returncode is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except asyncio.TimeoutError:
            self.process.kill()
            await self.process.wait()
