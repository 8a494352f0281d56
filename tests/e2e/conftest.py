"""Fixtures for the end-to-end tests: real ``shim`` processes, real sockets, nothing mocked.

- ``Store``: a temporary embedded store driven through the admin CLI (``python -m shim ...``) with its
  own master key and XDG directories. ``make_store`` (any scope) builds one; ``store`` is a fresh one per test.
- ``Sidecar``: ``python -m shim run`` started as a real subprocess (no shell, so its pid is the
  sidecar's), stdout and stderr captured to files, stopped with SIGTERM. ``SidecarFactory.start`` waits
  for ``GET /_/health == 200``. ``sidecars`` (per test) and ``module_sidecars`` (per module) stop
  whatever they started at teardown.

The sidecar never gets ``SHIM_MASTER_KEY``: it must work with the function's own credential only.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNTIME_PATH = REPO / "runtimes" / "python"
PYTHON = sys.executable

# The long-running handler (mode=http, delivery params). Paths choose the behaviour; every invocation
# appends its path to $E2E_COUNTER when that is set, so a test can prove whether the function ran.
HTTP_HANDLER = r'''
import base64, hashlib, json, os, sys, time


def _plain(secrets):
    out = {}
    for name, keys in secrets.items():
        out[name] = {k: (v if isinstance(v, str) else {"base64": base64.b64encode(v).decode()})
                     for k, v in keys.items()}
    return out


def handle(event, context):
    counter = os.environ.get("E2E_COUNTER")
    if counter:
        with open(counter, "a") as f:
            f.write(event.path + "\n")
    plain = _plain(context.secrets)
    if event.path == "/slow":
        time.sleep(1)
        return "slow done"
    if event.path == "/raise":
        raise RuntimeError("cannot connect with password " + context.secrets["sa"]["password"])
    if event.path == "/print":
        print("stdout says", context.secrets["sa"]["password"])               # block-buffered pipe
        print("stderr says", context.secrets["sa"]["password"], file=sys.stderr)
        print("repr says", repr(context.secrets["sa"]["blob"]), file=sys.stderr, flush=True)
        return "printed"
    if event.path == "/env":  # the function process's own environment: no secret may be there
        return {"statusCode": 200, "body": {"env": dict(os.environ)}}
    described = {
        "method": event.method,
        "path": event.path,
        "query_string": event.query_string,
        "query": event.query,
        "headers": event.headers.raw_items(),
        "body_sha256": hashlib.sha256(event.body).hexdigest(),
        "body_len": len(event.body),
        "names": sorted(context.secrets),
        "secrets_sha256": hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest(),
    }
    if event.path.startswith("/digest"):  # no value in the answer
        described["body_b64"] = base64.b64encode(event.body).decode()
        return {"statusCode": 200, "body": described}
    described["secrets"] = plain
    described["function"] = context.function
    return {"statusCode": 200, "body": described}
'''

# The fork-per-invocation handler (mode=serializing, delivery env): stdin in, JSON of its env out.
FORK_HANDLER = r'''
import hashlib, json, os, sys

body = sys.stdin.buffer.read()
if os.environ.get("Http_Path") == "/print":
    for name in sorted(os.environ):
        if name.startswith("SECRET_"):
            print("stderr says", name, os.environ[name], file=sys.stderr, flush=True)  # a str: \udcXX for binary
            sys.stderr.buffer.write(b"raw says " + name.encode() + b" " + os.environb[name.encode()] + b"\n")
            sys.stderr.buffer.flush()
    sys.stdout.write("printed\n")
else:
    env = {k.decode("latin-1"): v.hex() for k, v in os.environb.items()}
    json.dump({"env": env, "body_sha256": hashlib.sha256(body).hexdigest(), "body_len": len(body)}, sys.stdout)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ store

class Store:
    """A temporary embedded store, administered through the CLI as a user would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / "store.db"
        self.url = f"embedded:{self.path}"
        self.master_key = base64.b64encode(os.urandom(32)).decode()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIM_", "XDG_"))}
        self.env.update(
            SHIM_STORE=self.url,
            SHIM_MASTER_KEY=self.master_key,
            XDG_CONFIG_HOME=str(root / "config"),
            XDG_DATA_HOME=str(root / "data"),
            HOME=str(root / "home"),
        )
        self.keys: dict[str, Path] = {}

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([PYTHON, "-m", "shim", *args], env=self.env, cwd=self.root,
                              capture_output=True, timeout=60)
        if check:
            assert proc.returncode == 0, (args[:2], proc.returncode, proc.stderr.decode(errors="replace"))
        return proc

    def secret(self, name: str, values: Mapping[str, str | bytes], *, update: bool = False) -> None:
        args = ["secret", "update" if update else "create", name]
        for key, value in values.items():
            if isinstance(value, bytes):
                path = self.root / f".value-{secrets.token_hex(4)}"
                path.write_bytes(value)
                args += ["--from-file", f"{key}={path}"]
            else:
                args.append(f"{key}={value}")
        try:
            self.cli(*args)
        finally:
            for each in self.root.glob(".value-*"):
                each.unlink()

    def function(self, name: str) -> Path:
        key = self.root / f"{name}.key"
        self.cli("function", "create", name, "--key-out", str(key))
        self.keys[name] = key
        return key

    def bind(self, secret: str, function: str) -> None:
        self.cli("bind", secret, function)

    def unbind(self, secret: str, function: str) -> None:
        self.cli("unbind", secret, function)


@pytest.fixture(scope="session")
def make_store(tmp_path_factory):
    def make(name: str = "store") -> Store:
        return Store(tmp_path_factory.mktemp(name))
    return make


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


# ---------------------------------------------------------------------------------------- sidecar

@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self):
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass
class Sidecar:
    proc: subprocess.Popen
    port: int
    workdir: Path
    tmpdir: Path
    stdout_path: Path
    stderr_path: Path
    env: dict[str, str]
    wrapped: bool = False  # started under a wrapper (strace): the sidecar is the wrapper's child
    returncode: int | None = None
    children: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        """The sidecar's own pid (not a wrapper's)."""
        if not self.wrapped:
            return self.proc.pid
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            children = (task / "children").read_text().split()
            if children:
                return int(children[0])
        raise AssertionError("the wrapped sidecar process is gone")

    @property
    def lock_path(self) -> Path:
        return self.tmpdir / ".lock"

    def connection(self, timeout: float = 10) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str = "GET", path: str = "/", body: bytes | Iterable[bytes] | None = None,
                headers: Iterable[tuple[str, str]] = (), *, chunked: bool = False, timeout: float = 10,
                conn: http.client.HTTPConnection | None = None) -> Response:
        own = conn is None
        conn = conn or self.connection(timeout)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            elif body is not None:
                conn.putheader("Content-Length", str(len(body)))  # type: ignore[arg-type]
            if chunked:  # http.client's own chunked encoding of an iterable body
                conn.endheaders(iter(body or ()), encode_chunked=True)
            else:
                conn.endheaders(body)  # type: ignore[arg-type]
            resp = conn.getresponse()
            return Response(resp.status, resp.getheaders(), resp.read())
        finally:
            if own:
                conn.close()

    def get(self, path: str = "/", **kw) -> Response:
        return self.request("GET", path, **kw)

    def running(self) -> bool:
        return self.proc.poll() is None

    def _remember_children(self) -> None:
        try:
            for task in Path(f"/proc/{self.pid}/task").iterdir():
                text = (task / "children").read_text()
                self.children.update(int(p) for p in text.split())
        except (OSError, AssertionError):
            pass

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, wait; SIGKILL (and the function processes) only if it does not stop in time."""
        if self.returncode is not None:
            return self.returncode
        self._remember_children()
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except (OSError, AssertionError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait(5)
            for child in self.children:
                try:
                    os.kill(child, signal.SIGKILL)
                except OSError:
                    pass
        return self.returncode

    def output(self) -> bytes:
        return self.stdout_path.read_bytes() + self.stderr_path.read_bytes()

    def log_events(self) -> list[dict]:
        events = []
        for line in self.output().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                events.append(doc)
        return events


class SidecarStartError(AssertionError):
    pass


class SidecarFactory:
    """Starts ``shim run`` processes for one scope; ``stop_all`` ends what is still running."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[Sidecar] = []
        self._count = 0

    def _dir(self, prefix: str) -> Path:
        self._count += 1
        path = self.root / f"{prefix}{self._count}"
        path.mkdir(parents=True)
        return path

    def environment(self, store: Store, function: str, key: Path | str | None, port: int, *, mode: str,
                    ttl: float, tmpdir: Path, workdir: Path, extra: Mapping[str, str] | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SHIM_", "XDG_")) and k not in ("PYTHONPATH", "TMPDIR", "PYTHONUNBUFFERED")}
        env.update(
            SHIM_STORE=store.url,
            SHIM_FUNCTION=function,
            SHIM_FUNCTION_KEY=str(key if key is not None else store.keys[function]),
            SHIM_CACHE_TTL=f"{ttl:g}",
            port=str(port),
            mode=mode,
            healthcheck_interval="0",
            write_timeout="5s",
            TMPDIR=str(tmpdir),
            PYTHONPATH=os.pathsep.join(p for p in (str(RUNTIME_PATH), os.environ.get("PYTHONPATH")) if p),
            XDG_CONFIG_HOME=str(workdir / "config"),
            XDG_DATA_HOME=str(workdir / "data"),
            HOME=str(workdir / "home"),
        )
        if mode == "http":
            env["upstream_url"] = f"http://127.0.0.1:{free_port()}"
            env["fprocess"] = f"{PYTHON} -m shim_runtime handler:handle"
        else:
            env["fprocess"] = f"{PYTHON} handler.py"
        env.update(extra or {})
        env.pop("SHIM_MASTER_KEY", None)  # never: the sidecar works with the function's credential only
        return env

    def spawn(self, store: Store, function: str = "a", *, key: Path | str | None = None, mode: str = "http",
              ttl: float = 30, extra_env: Mapping[str, str] | None = None, wrapper: list[str] | None = None,
              handler: str | None = None) -> Sidecar:
        """Start a sidecar without waiting for it (``start`` waits for health)."""
        workdir = self._dir("sidecar")
        tmpdir = workdir / "tmp"
        tmpdir.mkdir()
        code = handler if handler is not None else (HTTP_HANDLER if mode == "http" else FORK_HANDLER)
        (workdir / "handler.py").write_text(code)
        port = free_port()
        env = self.environment(store, function, key, port, mode=mode, ttl=ttl, tmpdir=tmpdir,
                               workdir=workdir, extra=extra_env)
        stdout_path, stderr_path = workdir / "sidecar.stdout", workdir / "sidecar.stderr"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.Popen([*(wrapper or []), PYTHON, "-m", "shim", "run"], env=env, cwd=workdir,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        sidecar = Sidecar(proc, port, workdir, tmpdir, stdout_path, stderr_path, env, wrapped=bool(wrapper))
        self.started.append(sidecar)
        return sidecar

    def start(self, store: Store, function: str = "a", *, timeout: float = 20, **kw) -> Sidecar:
        sidecar = self.spawn(store, function, **kw)
        wait_healthy(sidecar, timeout)
        sidecar._remember_children()
        return sidecar

    def stop_all(self) -> None:
        for sidecar in self.started:
            sidecar.stop()


def wait_healthy(sidecar: Sidecar, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sidecar.running():
            raise SidecarStartError(f"sidecar exited with {sidecar.proc.returncode}: "
                                    f"{sidecar.output().decode(errors='replace')[-3000:]}")
        try:
            if sidecar.get("/_/health", timeout=1).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.03)
    sidecar.stop()
    raise SidecarStartError(f"sidecar not healthy in {timeout}s: {sidecar.output().decode(errors='replace')[-3000:]}")


@pytest.fixture
def sidecars(tmp_path: Path):
    factory = SidecarFactory(tmp_path / "sidecars")
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def module_sidecars(tmp_path_factory):
    factory = SidecarFactory(tmp_path_factory.mktemp("sidecars"))
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def strace_path() -> str:
    path = shutil.which("strace")
    if path is None:
        pytest.skip("strace is not installed (run tests/setup-servers.sh or `make servers`)")
    return path
