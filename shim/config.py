"""The sidecar's configuration, parsed once into one typed object.

Flags win over environment variables; the OpenFaaS watchdog's variable names mean what they mean
there (``fprocess``/``function_process``, ``mode``, ``upstream_url``, ``port``, the timeouts, ...), and
shim's own are ``SHIM_*``. Nothing here ever holds a secret value: only names, paths and numbers.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Mapping, Sequence
from urllib.parse import urlsplit

from .errors import BadInput
from .names import QualifiedName

FORK_MODES = ("serializing", "streaming")
MODES = ("http",) + FORK_MODES
INJECT_MODES = ("params", "env")

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, what: str) -> float:
    """Seconds from a bare integer (seconds, as the watchdog reads it) or a Go duration like ``1m30s``."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _GO_DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise BadInput(f"invalid {what} {text!r}: use seconds (30) or a duration (30s, 1m30s, 500ms)")
    return total


def parse_bool(text: str) -> bool:
    """The watchdog's rule: only ``true`` and ``1`` are true."""
    return text.strip().lower() in ("true", "1")


@dataclass(frozen=True)
class SidecarConfig:
    store_url: str | None
    function: QualifiedName
    function_key: str
    mode: str = "http"
    inject: str = "params"
    fprocess: tuple[str, ...] = ()
    upstream_url: str = "http://127.0.0.1:5000"
    host: str = "0.0.0.0"
    port: int = 8080
    read_timeout: float = 30.0
    write_timeout: float = 30.0
    exec_timeout: float = 30.0
    healthcheck_interval: float = 30.0
    max_inflight: int = 0
    prefix_logs: bool = True
    content_type: str = "application/octet-stream"
    suppress_lock: bool = False
    cache_ttl: float = 5.0
    upstream_start_timeout: float = 30.0
    log_format: str = "auto"

    @property
    def forks_per_invocation(self) -> bool:
        return self.mode in FORK_MODES

    @property
    def upstream_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise BadInput(f"invalid upstream_url {self.upstream_url!r}: expected http://HOST:PORT")
        return parts.hostname, parts.port or 80


def _flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shim run", description="Serve a function, injecting its bound secrets.")
    p.add_argument("--store", help="backend URL (SHIM_STORE)")
    p.add_argument("--function", help="the function this sidecar serves (SHIM_FUNCTION)")
    p.add_argument("--function-key", help="path of the function's credential (SHIM_FUNCTION_KEY)")
    p.add_argument("--mode", choices=MODES, help="http (long-running process) or a fork-per-invocation mode (mode)")
    p.add_argument("--inject", choices=INJECT_MODES, help="params or env (SHIM_INJECT)")
    p.add_argument("--upstream-url", help="where the long-running function listens (upstream_url)")
    p.add_argument("--port", type=int, help="listen port (port, default 8080)")
    p.add_argument("--host", help="listen address (SHIM_HOST, default 0.0.0.0)")
    p.add_argument("--cache-ttl", help="longest a fetched secret or binding is reused (SHIM_CACHE_TTL, default 5s; 0 fetches every time)")
    p.add_argument("--log-format", choices=("auto", "json", "console"), help="SHIM_LOG_FORMAT (auto: console on a TTY)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...: the function process (fprocess)")
    return p


def load(argv: Sequence[str], environ: Mapping[str, str]) -> SidecarConfig:
    """Build the configuration from ``shim run`` flags and the environment; BadInput says what is wrong."""
    args = _flags().parse_args(list(argv))
    env = environ

    def pick(flag: object, *names: str, default: str | None = None) -> str | None:
        if flag is not None:
            return str(flag)
        for name in names:
            if env.get(name):
                return env[name]
        return default

    function_text = pick(args.function, "SHIM_FUNCTION")
    if not function_text:
        raise BadInput("which function? set SHIM_FUNCTION or --function")
    function_key = pick(args.function_key, "SHIM_FUNCTION_KEY")
    if not function_key:
        raise BadInput("no function credential: set SHIM_FUNCTION_KEY or --function-key to the file from 'shim function create'")

    mode = pick(args.mode, "mode", default="http")
    if mode not in MODES:
        raise BadInput(f"unknown mode {mode!r}: shim supports {', '.join(MODES)}")
    inject = pick(args.inject, "SHIM_INJECT", default="env" if mode in FORK_MODES else "params")
    if inject not in INJECT_MODES:
        raise BadInput(f"unknown SHIM_INJECT {inject!r}: use params or env")
    if inject == "env" and mode == "http":
        raise BadInput("SHIM_INJECT=env needs a process per invocation: use mode=serializing or mode=streaming")
    if inject == "params" and mode in FORK_MODES:
        raise BadInput(f"SHIM_INJECT=params needs a long-running function: use mode=http (mode={mode} delivers env)")

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    fprocess_text = env.get("function_process") or env.get("fprocess") or ""
    fprocess = tuple(command) if command else tuple(p for p in fprocess_text.split(" ") if p)
    if mode in FORK_MODES and not fprocess:
        raise BadInput(f'mode={mode} needs a command: set "fprocess" (or function_process) or pass -- COMMAND')

    def number(flag: object, name: str, default: str) -> int:
        text = pick(flag, name, default=default)
        try:
            return int(text)
        except ValueError:
            raise BadInput(f"invalid {name} {text!r}: expected a whole number") from None

    def duration(flag: object, name: str, default: str) -> float:
        return parse_duration(pick(flag, name, default=default), name)

    write_timeout = duration(None, "write_timeout", "30s")
    if write_timeout <= 0:
        raise BadInput("HTTP write timeout must be over 0s")
    port = number(args.port, "port", "8080")
    if not 0 < port < 65536:
        raise BadInput(f"invalid port {port}: expected 1-65535")

    config = SidecarConfig(
        store_url=pick(args.store, "SHIM_STORE"),
        function=QualifiedName.parse(function_text),
        function_key=function_key,
        mode=mode,
        inject=inject,
        fprocess=fprocess,
        upstream_url=pick(args.upstream_url, "http_upstream_url", "upstream_url", default="http://127.0.0.1:5000"),
        host=pick(args.host, "SHIM_HOST", default="0.0.0.0"),
        port=port,
        read_timeout=duration(None, "read_timeout", "30s"),
        write_timeout=write_timeout,
        exec_timeout=duration(None, "exec_timeout", "30s"),
        healthcheck_interval=parse_duration(env.get("healthcheck_interval") or str(write_timeout), "healthcheck_interval"),
        max_inflight=number(None, "max_inflight", "0"),
        prefix_logs=parse_bool(env.get("prefix_logs", "true")),
        content_type=env.get("content_type") or "application/octet-stream",
        suppress_lock=parse_bool(env.get("suppress_lock", "false")),
        cache_ttl=duration(args.cache_ttl, "SHIM_CACHE_TTL", "5s"),
        upstream_start_timeout=duration(None, "SHIM_UPSTREAM_START_TIMEOUT", "30s"),
        log_format=pick(args.log_format, "SHIM_LOG_FORMAT", default="auto"),
    )
    if mode == "http":
        _ = config.upstream_host_port  # a bad upstream_url is bad input now, not a failure at first use
    return config
