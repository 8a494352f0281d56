"""``shim demo [--once] [--port 8080] [--dir DIR]``: a first look at shim on the embedded store.

A narrated script that drives the public interface only: the ``shim`` command line for the
administration and ``shim run`` for the sidecars, each in its own process, exactly as a user would
type them. In a fresh demo directory it

1. creates a store with its own master key, two functions (``alpha``, ``beta``) and two secrets
   (``alpha-secret`` bound to alpha, ``beta-secret`` bound to beta);
2. puts a sidecar in front of alpha (``mode=http``, delivery ``params``, ``examples/hello-secret``),
   invokes it and checks that alpha received its own secret and not beta's, and that a caller cannot
   hand it another one;
3. puts a sidecar in front of beta (``mode=serializing``, delivery ``env``, ``examples/env-secret``),
   invokes it and checks the same the other way round;
4. checks that the sidecars' logs hold no secret value;
5. with ``--once``, stops and exits 0 if every check passed (1 otherwise); else keeps alpha's sidecar
   serving on localhost:PORT, prints what to try, and stops it cleanly on Ctrl-C.

Secret values never reach the terminal, except the harmless greetings the functions send back (showing
them arrive is the point); each ``api-token`` is random, goes in on standard input, and is never shown.
The master key is written to a 0600 file in the demo directory and given to the administration
commands only: the sidecars never see it, they open the store with their function's credential.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets as random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .errors import BadInput, ShimError

DEFAULT_DIR = ".demo"
DEFAULT_PORT = 8080
MARKER = ".shim-demo"  # marks a directory this demo may wipe on its next run
START_TIMEOUT = 30.0   # seconds for a sidecar to report healthy
STOP_TIMEOUT = 15.0    # seconds for a sidecar to stop after SIGTERM before it is killed
INVOKE_TIMEOUT = 15.0
# The fork mode of the env part: the watchdog's classic one, body in on stdin, whole answer out on stdout.
ENV_MODE = "serializing"

PACKAGE_DIR = Path(__file__).resolve().parent          # .../shim
SOURCE_ROOT = PACKAGE_DIR.parent                       # the checkout (or site-packages)
EXAMPLES = SOURCE_ROOT / "examples"
RUNTIME_SOURCE = SOURCE_ROOT / "runtimes" / "python"

# Inherited settings that would change what the demo's processes do: the demo sets its own.
_WATCHDOG_VARIABLES = frozenset({
    "fprocess", "function_process", "mode", "upstream_url", "http_upstream_url", "port", "PORT", "GRPC_PORT",
    "read_timeout", "write_timeout", "exec_timeout", "healthcheck_interval", "max_inflight", "prefix_logs",
    "content_type", "suppress_lock", "TMPDIR",
})


@dataclass(frozen=True)
class DemoFunction:
    name: str
    secret: str
    greeting: str


ALPHA = DemoFunction("alpha", "alpha-secret", "hello from alpha")
BETA = DemoFunction("beta", "beta-secret", "hello from beta")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise BadInput(message)


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = _Parser(
        prog="shim demo",
        description="A first look: a demo store, two functions, two secrets (one bound to each); shows that "
                    "each function receives its own secret and not the other's, in both delivery modes, "
                    "then keeps serving on localhost:PORT.")
    parser.add_argument("--once", action="store_true", help="run the scripted check, then stop (exit 0 if it passed)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="where the sidecar listens (default 8080)")
    parser.add_argument("--dir", default=DEFAULT_DIR, metavar="DIR",
                        help="the demo directory, wiped and recreated on each run (default .demo)")
    args = parser.parse_args(list(argv))
    if not 0 < args.port < 65536:
        raise BadInput(f"invalid --port {args.port}: expected 1-65535")
    return args


def main(argv: Sequence[str]) -> int:
    args = _parse(argv)
    return Demo(Path(args.dir).absolute(), args.port, args.once).run()


# ---------------------------------------------------------------- small helpers


def _shown(path: Path | str) -> str:
    """A path as the user would type it: relative to the current directory when under it."""
    path = Path(path)
    try:
        relative = path.relative_to(Path.cwd())
    except ValueError:
        return str(path)
    return str(relative) if str(relative) != "." else "."


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the sidecar binds: TIME_WAIT is no conflict
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    """In a sidecar child before exec (Linux): get SIGTERM if the demo itself dies, so no orphan keeps the port."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError, ImportError):
        pass


def _module_importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # localhost never goes through a proxy


def _invoke(port: int, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body, method="POST", headers=headers or {})
    try:
        with _NO_PROXY.open(request, timeout=INVOKE_TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _healthy(port: int) -> bool:
    try:
        with _NO_PROXY.open(f"http://127.0.0.1:{port}/_/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class _Stop(Exception):
    """SIGTERM or SIGHUP to the demo: stop the sidecars as on Ctrl-C."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop()


# ---------------------------------------------------------------- the sidecars


class Sidecar:
    """One ``shim run`` process, its log in the demo directory."""

    def __init__(self, function: DemoFunction, port: int, log_path: Path, process: subprocess.Popen) -> None:
        self.function = function
        self.port = port
        self.log_path = log_path
        self.process = process

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_tail(self, lines: int = 3) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []


# ---------------------------------------------------------------- the script


class Demo:
    def __init__(self, directory: Path, port: int, once: bool) -> None:
        self.dir = directory
        self.port = port
        self.once = once
        self.store_url = f"embedded:{directory / 'store.db'}"
        self.master_key_file = directory / "master.key"
        self.sidecars: list[Sidecar] = []
        self.results: list[bool] = []
        self.values: list[str] = []  # every value stored, to check that no log line holds one
        encoding = getattr(sys.stdout, "encoding", None) or "ascii"
        try:
            "✓✗".encode(encoding)
            self.marks = ("✓", "✗")
        except (UnicodeEncodeError, LookupError):
            self.marks = ("OK", "FAIL")

    # -- output --

    @staticmethod
    def say(line: str = "") -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def heading(self, text: str) -> None:
        self.say()
        self.say(text)

    def check(self, ok: bool, text: str) -> bool:
        self.results.append(ok)
        self.say(f"  {self.marks[0] if ok else self.marks[1]} {text}")
        return ok

    # -- environments --

    def _base_env(self) -> dict[str, str]:
        """The caller's environment without any shim setting (SHIM_MASTER_KEY included) or watchdog setting."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIM_") and k not in _WATCHDOG_VARIABLES}
        paths = [str(SOURCE_ROOT)]  # `python -m shim` from any working directory
        if not _module_importable("shim_runtime"):
            paths.append(str(RUNTIME_SOURCE))  # not installed (make installs it): use the checkout's copy
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _admin_env(self) -> dict[str, str]:
        return {**self._base_env(), "SHIM_STORE": self.store_url, "SHIM_MASTER_KEY_FILE": str(self.master_key_file)}

    # -- setup --

    def _preflight(self) -> None:
        for path, what in ((EXAMPLES / "hello-secret" / "handler.py", "examples/hello-secret"),
                           (EXAMPLES / "env-secret" / "handler.py", "examples/env-secret")):
            if not path.is_file():
                raise ShimError(f"the demo needs {what} from a shim source checkout ({path} is missing); "
                                "run it from the repository with make demo")
        if not _module_importable("shim_runtime") and not (RUNTIME_SOURCE / "shim_runtime").is_dir():
            raise ShimError("the Python runtime (shim_runtime) is neither installed nor in runtimes/python; "
                            "run make demo, which installs it")
        if not _port_is_free(self.port):
            raise ShimError(f"port {self.port} on localhost is in use (another demo or server?); "
                            f"choose another with --port, e.g. make demo ARGS='--port {self.port + 1}'")

    def _prepare_dir(self) -> None:
        """Empty the demo directory (only if it is empty or an earlier demo's), mode 0700, with its marker."""
        d = self.dir
        if d.is_symlink() or (d.exists() and not d.is_dir()):
            raise BadInput(f"--dir {d} exists and is not a directory; choose another --dir")
        if d.exists():
            entries = list(d.iterdir())
            if entries and not (d / MARKER).is_file():
                raise BadInput(f"--dir {d} is not empty and not a shim demo directory; "
                               "refusing to wipe it, choose another --dir")
            for entry in entries:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        else:
            d.mkdir(mode=0o700, parents=True)
        os.chmod(d, 0o700)
        (d / MARKER).write_text("A directory of `shim demo`: wiped and recreated on each run.\n")

    def _write_master_key(self) -> None:
        fd = os.open(self.master_key_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(os.urandom(32)).decode("ascii") + "\n")

    def _shim(self, args: list[str], shown: list[str] | None = None, stdin: bytes = b"", note: str = "") -> None:
        """Run one administration command, narrated; its output holds names and keys, never values."""
        line = "$ shim " + " ".join(shlex.quote(a) for a in (shown or args))
        self.say(line + (f"    # {note}" if note else ""))
        proc = subprocess.run([sys.executable, "-m", "shim", *args], input=stdin, capture_output=True,
                              env=self._admin_env(), cwd=self.dir, timeout=60)
        for out in (proc.stdout, proc.stderr):
            for text in out.decode("utf-8", "replace").splitlines():
                self.say(f"  {text}")
        if proc.returncode != 0:
            raise ShimError(f"the demo step 'shim {' '.join(shown or args)}' failed (exit status {proc.returncode})")

    def administer(self) -> None:
        self.heading("1. The administrator's side: the shim command line on the demo store")
        for fn in (ALPHA, BETA):
            token = random.token_urlsafe(24)
            self.values += [fn.greeting, token]
            self._shim(["secret", "create", fn.secret, f"greeting={fn.greeting}", "--from-stdin", "api-token"],
                       stdin=token.encode(), note="api-token: a random token on stdin, never shown")
        for fn in (ALPHA, BETA):
            key = self.dir / f"{fn.name}.key"
            self._shim(["function", "create", fn.name, "--key-out", str(key)],
                       shown=["function", "create", fn.name, "--key-out", _shown(key)])
        for fn in (ALPHA, BETA):
            self._shim(["bind", fn.secret, fn.name])
        self._shim(["bindings"])

    # -- sidecars --

    def _start(self, fn: DemoFunction, port: int, example: str, command: list[str], shown_command: list[str],
               settings: dict[str, str]) -> Sidecar:
        """Start ``shim run`` for ``fn`` with only its own credential (no master key), wait until healthy."""
        key = self.dir / f"{fn.name}.key"
        tmp = self.dir / f"tmp-{fn.name}"  # each sidecar its own lock file
        tmp.mkdir(mode=0o700, exist_ok=True)
        log_path = self.dir / f"sidecar-{fn.name}.log"
        own = {"SHIM_FUNCTION": fn.name, "SHIM_FUNCTION_KEY": str(key), **settings, "port": str(port)}
        env = {**self._base_env(), **own, "SHIM_STORE": self.store_url, "SHIM_HOST": "127.0.0.1",
               "SHIM_LOG_FORMAT": "json", "TMPDIR": str(tmp), "healthcheck_interval": "0"}
        assert "SHIM_MASTER_KEY" not in env and "SHIM_MASTER_KEY_FILE" not in env

        inside = key.is_relative_to(SOURCE_ROOT)  # e.g. .demo/alpha.key -> ../../.demo/alpha.key
        shown_env = {**own, "SHIM_FUNCTION_KEY": os.path.relpath(key, EXAMPLES / example) if inside else str(key)}
        self.say(f"$ cd {_shown(EXAMPLES / example)}")
        self.say("$ " + " ".join(f"{k}={shlex.quote(v)}" for k, v in shown_env.items())
                 + " shim run -- " + " ".join(shlex.quote(a) for a in shown_command))
        self.say(f"  (SHIM_STORE is the demo store; no master key in its environment; its log: {_shown(log_path)})")
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "shim", "run", "--", *command], cwd=EXAMPLES / example, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        sidecar = Sidecar(fn, port, log_path, process)
        self.sidecars.append(sidecar)

        deadline = time.monotonic() + START_TIMEOUT
        while not _healthy(port):
            code = process.poll()
            if code is not None or time.monotonic() > deadline:
                what = f"exited with status {code}" if code is not None else f"was not healthy after {START_TIMEOUT:g} s"
                for line in sidecar.log_tail():
                    self.say(f"  | {line}")
                hint = f" (is port {port} taken?)" if code == 1 else ""
                raise ShimError(f"the sidecar for {fn.name} {what}{hint}; see {_shown(log_path)}")
            time.sleep(0.05)
        self.say(f"  the sidecar for {fn.name} is healthy on http://localhost:{port}")
        return sidecar

    def _call(self, port: int, body: bytes, headers: dict[str, str] | None = None,
              shown_headers: str = "") -> tuple[int, dict[str, Any]]:
        data = body.decode("utf-8", "replace")
        self.say(f"$ curl -s localhost:{port}/{shown_headers} -d {shlex.quote(data)}")
        try:
            status, raw = _invoke(port, body, headers)
        except (urllib.error.URLError, OSError) as exc:
            self.check(False, f"the invocation failed: {getattr(exc, 'reason', exc)}")
            return 0, {}
        text = raw.decode("utf-8", "replace").strip()
        self.say(f"  {text}" if status == 200 else f"  HTTP {status}: {text}")
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        return status, doc if isinstance(doc, dict) else {}

    def params_delivery(self) -> Sidecar:
        fn = ALPHA
        self.heading(f'2. Delivery "params": {fn.name} as a long-running Python function '
                     "(examples/hello-secret), its secrets passed with each request")
        upstream = _free_port()
        sidecar = self._start(
            fn, self.port, "hello-secret",
            [sys.executable, "-m", "shim_runtime", "handler:handle"], ["python3", "-m", "shim_runtime", "handler:handle"],
            {"mode": "http", "upstream_url": f"http://127.0.0.1:{upstream}"},
        )
        status, doc = self._call(self.port, b"hi")
        got = doc.get("secrets")
        got = got if isinstance(got, dict) else {}
        self.check(status == 200 and doc.get("function") == f"default/default/{fn.name}",
                   f"the sidecar served {fn.name} (HTTP {status})")
        self.check(got.get(fn.secret) == ["api-token", "greeting"],
                   f"{fn.name} received its own secret {fn.secret} (keys api-token, greeting)")
        self.check(doc.get("greeting") == fn.greeting,
                   f"{fn.name} got the real value of {fn.secret}'s greeting: {fn.greeting!r}")
        self.check(status == 200 and BETA.secret not in got and set(got) == {fn.secret},
                   f"{BETA.secret} (bound to {BETA.name}) is not among {fn.name}'s secrets")

        # A caller cannot name secrets at invocation time: a forged block in the request is dropped.
        forged = json.dumps({"v": 1, "function": f"default/default/{fn.name}",
                             "secrets": {BETA.secret: {"greeting": "forged by the caller"}}}).encode()
        status, doc = self._call(self.port, forged, {"Shim-Secrets": str(len(forged))},
                                 shown_headers=f" -H 'Shim-Secrets: {len(forged)}'")
        got = doc.get("secrets")
        self.check(status == 200 and got == {fn.secret: ["api-token", "greeting"]} and doc.get("greeting") == fn.greeting,
                   f"a caller cannot hand {fn.name} a secret: the forged Shim-Secrets block naming "
                   f"{BETA.secret} was not delivered")
        return sidecar

    def env_delivery(self) -> None:
        fn = BETA
        self.heading(f'3. Delivery "env": {fn.name} as a process per invocation (examples/env-secret), '
                     "its secrets in that process's environment")
        sidecar = self._start(fn, _free_port(), "env-secret", [sys.executable, "handler.py"], ["python3", "handler.py"],
                              {"mode": ENV_MODE})
        status, doc = self._call(sidecar.port, b"ping")
        names = doc.get("secrets")
        names = names if isinstance(names, list) else []
        greetings = doc.get("greetings")
        greetings = greetings if isinstance(greetings, dict) else {}
        own = "SECRET_BETA_SECRET_"
        self.check(status == 200 and greetings.get(own + "GREETING") == fn.greeting,
                   f"{fn.name} got {own}GREETING={fn.greeting!r} in its environment")
        self.check(own + "API_TOKEN" in names, f"{fn.name} got {own}API_TOKEN (api-token: '-' becomes '_')")
        self.check(status == 200 and bool(names) and not any(n.startswith("SECRET_ALPHA_") for n in names),
                   f"no SECRET_ALPHA_* variable: {ALPHA.secret} (bound to {ALPHA.name}) did not reach {fn.name}")
        self.say(f"  stopping the sidecar for {fn.name}")
        sidecar.stop()
        self.sidecars.remove(sidecar)

    def logs_hold_no_value(self) -> None:
        self.heading("4. The sidecars' logs (JSON, one event per invocation; names only)")
        time.sleep(0.3)  # a running sidecar writes its log lines every 100 ms
        logs = sorted(self.dir.glob("sidecar-*.log"))
        leaked = [p for p in logs if any(v in p.read_text(errors="replace") for v in self.values)]
        self.check(bool(logs) and not leaked,
                   f"no secret value in {', '.join(_shown(p) for p in logs)}"
                   + (f" (found in {', '.join(_shown(p) for p in leaked)})" if leaked else ""))

    # -- after the script --

    def _shim_command(self) -> str:
        """How the user can run shim from their shell."""
        beside = Path(sys.executable).parent / "shim"
        on_path = shutil.which("shim")
        if beside.is_file():
            if on_path and Path(on_path).resolve() == beside.resolve():
                return "shim"
            return shlex.quote(_shown(beside))
        return "shim" if on_path else f"{shlex.quote(_shown(sys.executable))} -m shim"

    def serve(self, sidecar: Sidecar) -> int:
        shim = self._shim_command()
        key = self.dir / f"{ALPHA.name}.key"
        self.heading(f"The sidecar for {ALPHA.name} keeps serving on http://localhost:{self.port}. Try:")
        self.say(f"  curl -s localhost:{self.port}/ -d 'hi'")
        self.say(f"  curl -s localhost:{self.port}/_/health")
        self.say()
        self.say("Change the demo store from another shell; the sidecar sees it within SHIM_CACHE_TTL (5 s):")
        unset = "unset SHIM_MASTER_KEY; " if os.environ.get("SHIM_MASTER_KEY") else ""
        self.say(f"  {unset}export SHIM_STORE={shlex.quote(self.store_url)} "
                 f"SHIM_MASTER_KEY_FILE={shlex.quote(str(self.master_key_file))}")
        self.say(f"  {shim} secret list")
        self.say(f"  {shim} secret get {ALPHA.secret}                           # values stay hidden")
        self.say(f"  {shim} secret update {ALPHA.secret} greeting='hello again'  # replaces its keys")
        self.say(f"  {shim} bind {BETA.secret} {ALPHA.name}    # then curl: {ALPHA.name} gets both secrets")
        self.say(f"  {shim} unbind {BETA.secret} {ALPHA.name}")
        self.say()
        self.say(f"The sidecar's log (JSON, values redacted): {_shown(sidecar.log_path)}; "
                 f"{ALPHA.name}'s credential: {_shown(key)}")
        self.say("Press Ctrl-C to stop.")
        try:
            code = sidecar.process.wait()
        except (KeyboardInterrupt, _Stop):
            self.say()
            self.say(f"Stopping the sidecar for {ALPHA.name} ...")
            code = sidecar.stop()
            self.sidecars.remove(sidecar)
            self.say("Stopped." if code == 0 else f"Stopped (exit status {code}).")
            return 0
        self.sidecars.remove(sidecar)
        sys.stderr.write(f"shim: error: the sidecar for {ALPHA.name} exited with status {code}; "
                         f"see {_shown(sidecar.log_path)}\n")
        return 1

    def run(self) -> int:
        self._preflight()
        previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGHUP)}
        # Ctrl-C, even where it started ignored (a background job of a non-interactive shell).
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            self._prepare_dir()
            self._write_master_key()
            self.say("shim demo: two functions, two secrets (one bound to each), and a sidecar in front of each")
            self.say(f"  demo directory: {_shown(self.dir)} (recreated on each run)")
            self.say(f"  store: embedded:{_shown(self.dir / 'store.db')}; its master key: "
                     f"{_shown(self.master_key_file)} (0600), given to the administration commands only")
            self.administer()
            alpha = self.params_delivery()
            self.env_delivery()
            self.logs_hold_no_value()
            passed, total = sum(self.results), len(self.results)
            self.say()
            if passed != total:
                self.say(f"{total - passed} of {total} checks FAILED; the sidecars' logs are in {_shown(self.dir)}")
                return 1
            self.say(f"All {total} checks passed: each function received its own secret, and only that.")
            if self.once:
                return 0
            return self.serve(alpha)
        except (KeyboardInterrupt, _Stop):
            self.say()
            self.say("Interrupted; stopping the sidecars.")
            return 130
        finally:
            for sidecar in list(self.sidecars):
                sidecar.stop()
            self.sidecars.clear()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
