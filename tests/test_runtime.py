"""Tests of the Python runtime (runtimes/python, package shim_runtime).

The end-to-end tests start ``python -m shim_runtime`` as a real subprocess on a port the OS
picks (``PORT=0``; the port is read from the start-up line) and talk to it with http.client or
a raw socket, the way the sidecar does. The unit tests cover the pure modules.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNTIME_DIR = REPO / "runtimes" / "python"
EXAMPLES = REPO / "examples"
sys.path.insert(0, str(RUNTIME_DIR))

from shim_runtime.event import Context, Headers, secrets_view  # noqa: E402
from shim_runtime.protocol import (  # noqa: E402
    ProtocolError,
    parse_block,
    parse_length,
    split_payload,
)
from shim_runtime.redact import REDACTED, redact  # noqa: E402
from shim_runtime.response import InvalidResponse, build_response  # noqa: E402

# -- test data ---------------------------------------------------------------------------------

PASSWORD = "pa'ss\nw0rd-7f3a"  # a quote and a newline: its repr differs from the value
BINARY_KEY = b"\xff\xfe\x00binarysecret\x80"
FUNCTION = "default/default/echo"


def make_block(version: Any = 1, **extra: Any) -> bytes:
    block = {
        "v": version,
        "function": FUNCTION,
        "secrets": {"db": {"username": "app", "password": PASSWORD}, "tls": {"cert.pem": "CERT"}},
        "binary": {"tls": {"key.der": base64.b64encode(BINARY_KEY).decode()}},
    }
    block.update(extra)
    return json.dumps(block).encode("utf-8")


BLOCK = make_block()
EXPECTED_SECRETS = {
    "db": {"username": {"text": "app"}, "password": {"text": PASSWORD}},
    "tls": {"cert.pem": {"text": "CERT"}, "key.der": {"b64": base64.b64encode(BINARY_KEY).decode()}},
}

APP = r'''
import asyncio, base64, os, time

def _describe(value):
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    return {"text": value}

def route(event, context):
    if event.path == "/raw":
        return event.body
    if event.path == "/boom":
        password = context.secrets["db"]["password"]
        key = context.secrets["tls"]["key.der"]
        try:
            raise KeyError(password)
        except KeyError:
            raise ValueError(f"cannot log in with {password} and {key!r} / {key.decode('latin-1')}")
    if event.path == "/status":
        return {"statusCode": 201, "body": b"created",
                "headers": {"X-Custom": "yes", "Content-Length": "999", "Set-Cookie": ["a=1", "b=2"]}}
    if event.path == "/none":
        return None
    if event.path == "/text":
        return "h\u00e9llo"
    if event.path == "/bad-return":
        return {"message": "a data dict, not a response"}
    if event.path == "/slow":
        time.sleep(1.0)
        return "slow done"
    values = [v for keys in context.secrets.values() for v in keys.values() if isinstance(v, str)]
    return {"body": {
        "method": event.method, "path": event.path, "query": event.query,
        "query_string": event.query_string,
        "body_b64": base64.b64encode(event.body).decode(),
        "headers": event.headers.raw_items(),
        "content_length": event.headers.get("content-length"),
        "has_shim_header": "shim-secrets" in event.headers,
        "function": context.function, "hostname": context.hostname,
        "secrets": {n: {k: _describe(v) for k, v in keys.items()} for n, keys in context.secrets.items()},
        "secrets_in_env": any(v in os.environ.values() for v in values),
        "context_repr": repr(context),
    }}

async def async_route(event, context):
    await asyncio.sleep(0)
    return {"statusCode": 202, "body": {"async": True, "secrets": sorted(context.secrets)}}
'''

# -- running the runtime -----------------------------------------------------------------------


class Runtime:
    """A ``python -m shim_runtime`` subprocess and everything it wrote to stderr."""

    def __init__(self, cwd: Path, *args: str) -> None:
        env = dict(os.environ)
        env.update(PYTHONPATH=str(RUNTIME_DIR), PORT="0", HOST="127.0.0.1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shim_runtime", *args],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self.port: int | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if not self._ready.wait(15) or self.port is None:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"runtime did not start: {self.stderr!r}")

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            match = re.search(r"serving \S+ on http://127\.0\.0\.1:(\d+)", line)
            if match and self.port is None:
                self.port = int(match.group(1))
                self._ready.set()
        self._ready.set()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_for_stderr(self, text: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.stderr and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.stderr

    def connect(self) -> http.client.HTTPConnection:
        assert self.port is not None
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(
        self, method: str = "POST", path: str = "/", body: Any = None, headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = self.connect()
        try:
            conn.request(method, path, body=body, headers=headers or {}, **kwargs)
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._reader.join(5)
        return code


def with_block(block: bytes, body: bytes) -> tuple[bytes, dict[str, str]]:
    return block + body, {"Shim-Secrets": str(len(block))}


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("app")
    (directory / "app.py").write_text(APP)
    return directory


@pytest.fixture(scope="module")
def runtime(app_dir: Path) -> Iterator[Runtime]:
    rt = Runtime(app_dir, "app:route")
    yield rt
    assert rt.stop() == 0, rt.stderr


def echo(rt: Runtime, body: bytes = b"", block: bytes | None = BLOCK, path: str = "/",
         headers: dict[str, str] | None = None, method: str = "POST") -> dict[str, Any]:
    all_headers = dict(headers or {})
    if block is not None:
        body, extra = with_block(block, body)
        all_headers.update(extra)
    status, _, data = rt.request(method, path, body=body, headers=all_headers)
    assert status == 200, data
    return json.loads(data)


# -- end to end: the protocol ------------------------------------------------------------------


def test_block_with_text_and_binary_values(runtime: Runtime) -> None:
    seen = echo(runtime, b"hello")
    assert seen["secrets"] == EXPECTED_SECRETS
    assert seen["function"] == FUNCTION
    assert seen["hostname"]
    assert base64.b64decode(seen["body_b64"]) == b"hello"


def test_secrets_are_not_in_the_environment_or_the_context_repr(runtime: Runtime) -> None:
    seen = echo(runtime, b"x")
    assert seen["secrets_in_env"] is False
    assert "db" in seen["context_repr"]
    assert "w0rd-7f3a" not in seen["context_repr"] and "app'" not in seen["context_repr"]


@pytest.mark.parametrize(
    "body", [b"", b"plain text", bytes(range(256)) * 64, b'{"v": 2, "looks": "like a block"}'],
    ids=["empty", "text", "binary", "block-like"],
)
def test_body_is_the_callers_byte_for_byte(runtime: Runtime, body: bytes) -> None:
    payload, headers = with_block(BLOCK, body)
    status, response_headers, data = runtime.request("POST", "/raw", body=payload, headers=headers)
    assert status == 200
    assert data == body
    assert response_headers["Content-Length"] == str(len(body))


def test_handler_headers_have_no_shim_header_and_the_callers_length(runtime: Runtime) -> None:
    seen = echo(runtime, b"12345", headers={"X-Trace": "abc", "Content-Type": "text/plain"})
    names = [name.lower() for name, _ in seen["headers"]]
    assert "shim-secrets" not in names
    assert seen["has_shim_header"] is False
    assert names.count("content-length") == 1
    assert seen["content_length"] == "5"
    assert ["X-Trace", "abc"] in seen["headers"]


def test_empty_body_with_block_has_content_length_zero(runtime: Runtime) -> None:
    seen = echo(runtime, b"")
    assert seen["body_b64"] == ""
    assert seen["content_length"] == "0"
    assert seen["secrets"] == EXPECTED_SECRETS


def test_no_block_means_no_secrets_and_body_untouched(runtime: Runtime) -> None:
    seen = echo(runtime, b"just a body", block=None)
    assert seen["secrets"] == {}
    assert seen["function"] == ""
    assert base64.b64decode(seen["body_b64"]) == b"just a body"
    assert seen["content_length"] == str(len(b"just a body"))


def test_no_block_and_no_body(runtime: Runtime) -> None:
    seen = echo(runtime, block=None, method="GET")
    assert seen["secrets"] == {} and seen["body_b64"] == "" and seen["method"] == "GET"


@pytest.mark.parametrize(
    "chunks",
    [
        [BLOCK, b"first ", b"second"],  # the block as its own chunk, as the sidecar sends it
        [BLOCK[:10], BLOCK[10:] + b"fir", b"st second"],  # chunk boundaries that ignore the block
    ],
    ids=["block-chunk", "split"],
)
def test_chunked_request(runtime: Runtime, chunks: list[bytes]) -> None:
    headers = {"Shim-Secrets": str(len(BLOCK)), "Transfer-Encoding": "chunked"}
    status, _, data = runtime.request("POST", "/", body=iter(chunks), headers=headers, encode_chunked=True)
    assert status == 200, data
    seen = json.loads(data)
    assert base64.b64decode(seen["body_b64"]) == b"first second"
    assert seen["secrets"] == EXPECTED_SECRETS
    names = [name.lower() for name, _ in seen["headers"]]
    assert "shim-secrets" not in names and "content-length" not in names


def test_chunked_with_extensions_and_trailers_keeps_the_connection_in_sync(runtime: Runtime) -> None:
    assert runtime.port is not None
    with socket.create_connection(("127.0.0.1", runtime.port), timeout=10) as sock:
        block = BLOCK
        request = (
            b"POST /raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            + f"Shim-Secrets: {len(block)}\r\n\r\n".encode()
            + f"{len(block):x};name=value\r\n".encode() + block + b"\r\n"
            + b"5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        sock.sendall(request)
        first = http.client.HTTPResponse(sock)
        first.begin()
        assert first.status == 200 and first.read() == b"hello" and not first.will_close
        # Had the server left any of the body, extensions or trailers unread, they would now be
        # taken for the start of this request.
        sock.sendall(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
        follow = http.client.HTTPResponse(sock)
        follow.begin()
        assert follow.status == 200 and follow.read() == "h\u00e9llo".encode()


def test_malformed_block_is_refused_without_echoing_it(runtime: Runtime) -> None:
    block = b'{"v": 1, "secrets": {"db": {"password": "leak-me-7781"}'  # truncated JSON
    status, headers, data = runtime.request("POST", "/", body=block + b"body",
                                            headers={"Shim-Secrets": str(len(block))})
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert "error" in json.loads(data)
    assert b"leak-me-7781" not in data
    assert "leak-me-7781" not in runtime.stderr


def test_unknown_version_is_refused_with_500(runtime: Runtime) -> None:
    payload, headers = with_block(make_block(version=2), b"body")
    status, _, data = runtime.request("POST", "/", body=payload, headers=headers)
    assert status == 500
    assert json.loads(data) == {"error": "unsupported secrets protocol version"}
    assert b"w0rd-7f3a" not in data and b"app" not in data


@pytest.mark.parametrize("value", ["abc", "-1", "+5", "1.0", "0x10", "", "99999", "\u00b2"])
def test_bad_shim_secrets_header_is_400(runtime: Runtime, value: str) -> None:
    status, _, data = runtime.request("POST", "/", body=BLOCK + b"body", headers={"Shim-Secrets": value})
    assert status == 400, data
    assert b"w0rd-7f3a" not in data


def test_two_shim_secrets_headers_are_refused(runtime: Runtime) -> None:
    conn = runtime.connect()
    try:
        body = BLOCK + b"body"
        conn.putrequest("POST", "/")
        conn.putheader("Shim-Secrets", str(len(BLOCK)))
        conn.putheader("shim-secrets", "0")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        assert response.status == 400
        response.read()
    finally:
        conn.close()


def test_conflicting_framing_is_refused_and_the_connection_closed(runtime: Runtime) -> None:
    assert runtime.port is not None
    with socket.create_connection(("127.0.0.1", runtime.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n0\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 400
        assert response.will_close
        response.read()


# -- end to end: the handler API ---------------------------------------------------------------


def test_handler_exception_is_500_and_the_log_is_redacted(runtime: Runtime) -> None:
    payload, headers = with_block(BLOCK, b"")
    status, _, data = runtime.request("POST", "/boom", body=payload, headers=headers)
    assert status == 500
    assert json.loads(data) == {"error": "handler raised ValueError"}
    log = runtime.wait_for_stderr("handler raised ValueError")
    assert "Traceback" in log and "ValueError" in log and "KeyError" in log
    assert REDACTED in log
    for leak in ("w0rd-7f3a", "binarysecret", PASSWORD, repr(PASSWORD)[1:-1]):
        assert leak not in log, leak
    assert b"w0rd-7f3a" not in data


def test_dict_return_with_status_headers_and_bytes_body(runtime: Runtime) -> None:
    status, headers, data = runtime.request("GET", "/status")
    assert status == 201
    assert data == b"created"
    assert headers["X-Custom"] == "yes"
    assert headers["Content-Length"] == "7"  # the handler's "999" is not used
    assert headers.get_all("Set-Cookie") == ["a=1", "b=2"]
    assert headers["Content-Type"] == "application/octet-stream"


def test_dict_body_is_json(runtime: Runtime) -> None:
    status, headers, data = runtime.request("GET", "/", body=None)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(data)["method"] == "GET"


def test_str_and_none_returns(runtime: Runtime) -> None:
    status, headers, data = runtime.request("GET", "/text")
    assert (status, data) == (200, "h\u00e9llo".encode())
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    status, headers, data = runtime.request("GET", "/none")
    assert (status, data, headers["Content-Length"]) == (200, b"", "0")


def test_invalid_return_is_500(runtime: Runtime) -> None:
    status, _, data = runtime.request("GET", "/bad-return")
    assert status == 500
    assert json.loads(data) == {"error": "handler returned an invalid response"}
    assert "unknown keys 'message'" in runtime.wait_for_stderr("invalid handler response")


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_invokes_the_handler(runtime: Runtime, method: str) -> None:
    seen = echo(runtime, b"data", method=method)
    assert seen["method"] == method
    assert seen["secrets"] == EXPECTED_SECRETS
    assert base64.b64decode(seen["body_b64"]) == b"data"


def test_head_sends_length_but_no_body(runtime: Runtime) -> None:
    status, headers, data = runtime.request("HEAD", "/status")
    assert status == 201
    assert headers["Content-Length"] == "7"
    assert data == b""


def test_path_and_query(runtime: Runtime) -> None:
    seen = echo(runtime, path="/some/path?a=1&a=2&b=&c=x%20y")
    assert seen["path"] == "/some/path"
    assert seen["query"] == {"a": "1", "b": "", "c": "x y"}
    assert seen["query_string"] == "a=1&a=2&b=&c=x%20y"


def test_keep_alive_two_requests_on_one_connection(runtime: Runtime) -> None:
    conn = runtime.connect()
    try:
        payload, headers = with_block(BLOCK, b"one")
        conn.request("POST", "/raw", body=payload, headers=headers)
        first = conn.getresponse()
        assert first.read() == b"one" and not first.will_close
        sock = conn.sock
        assert sock is not None
        # An error whose body was read does not cost the connection either.
        conn.request("POST", "/", body=b"x", headers={"Shim-Secrets": "5"})
        refused = conn.getresponse()
        assert refused.status == 400 and not refused.will_close
        refused.read()
        payload, headers = with_block(BLOCK, b"two")
        conn.request("POST", "/raw", body=payload, headers=headers)
        second = conn.getresponse()
        assert second.read() == b"two"
        assert conn.sock is sock  # http.client would have opened a new socket after a close
    finally:
        conn.close()


def test_nothing_about_requests_is_logged(runtime: Runtime) -> None:
    echo(runtime, b"body-marker-4471", headers={"X-Marker": "header-marker-4471"}, path="/p?q=query-marker-4471")
    runtime.request("POST", "/", body=b"bad", headers={"Shim-Secrets": "nope"})
    time.sleep(0.2)
    assert "marker-4471" not in runtime.stderr
    for line in runtime.lines:
        assert "POST" not in line and "HTTP/1.1" not in line


def test_async_handler(app_dir: Path) -> None:
    rt = Runtime(app_dir, "app:async_route")
    try:
        payload, headers = with_block(BLOCK, b"")
        status, _, data = rt.request("POST", "/", body=payload, headers=headers)
        assert status == 202
        assert json.loads(data) == {"async": True, "secrets": ["db", "tls"]}
    finally:
        assert rt.stop() == 0


def test_sigterm_lets_the_call_in_flight_finish_and_exits_0(app_dir: Path) -> None:
    rt = Runtime(app_dir, "app:route")
    result: dict[str, Any] = {}

    def slow_call() -> None:
        result["response"] = rt.request("GET", "/slow")

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.4)  # the call is in the handler's sleep
    rt.proc.send_signal(signal.SIGTERM)
    caller.join(10)
    assert rt.proc.wait(10) == 0
    status, headers, data = result["response"]
    assert (status, data) == (200, b"slow done")
    assert headers["Connection"] == "close"


def test_sigterm_is_not_held_up_by_an_idle_keep_alive_connection(app_dir: Path) -> None:
    rt = Runtime(app_dir, "app:route")
    conn = rt.connect()
    try:
        conn.request("GET", "/text")
        conn.getresponse().read()  # the connection now idles in the server, kept alive
        started = time.monotonic()
        assert rt.stop() == 0
        assert time.monotonic() - started < 5
    finally:
        conn.close()


def test_missing_handler_module_exits_2(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(RUNTIME_DIR), PORT="0")
    done = subprocess.run([sys.executable, "-m", "shim_runtime", "nothere:handle"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "cannot find handler module 'nothere'" in done.stderr
    assert "Traceback" not in done.stderr


# -- the examples ------------------------------------------------------------------------------


def test_hello_secret_example_with_the_default_target() -> None:
    rt = Runtime(EXAMPLES / "hello-secret")  # no argument: handler:handle from the cwd
    try:
        block = json.dumps({"v": 1, "function": "default/default/hello",
                            "secrets": {"hello-demo": {"greeting": "hello from shim", "token": "t0ken-9"}},
                            "binary": {"raw": {"k": "AAE="}}}).encode()
        payload, headers = with_block(block, b"")
        status, _, data = rt.request("POST", "/", body=payload, headers=headers)
        assert status == 200
        assert json.loads(data) == {
            "function": "default/default/hello",
            "secrets": {"hello-demo": ["greeting", "token"], "raw": ["k"]},
            "greeting": "hello from shim",
        }
        assert b"t0ken-9" not in data
    finally:
        assert rt.stop() == 0


def test_env_secret_example() -> None:
    env = {"PATH": os.environ.get("PATH", ""), "SECRET_HELLO_DEMO_GREETING": "hi there",
           "SECRET_DB_PASSWORD": "pw-5512", "OTHER_GREETING": "not a secret"}
    done = subprocess.run([sys.executable, str(EXAMPLES / "env-secret" / "handler.py")], input=b"ping",
                          env=env, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "secrets": ["SECRET_DB_PASSWORD", "SECRET_HELLO_DEMO_GREETING"],
        "greetings": {"SECRET_HELLO_DEMO_GREETING": "hi there"},
        "body_bytes": 4,
    }
    assert b"pw-5512" not in done.stdout


def test_runtime_package_has_no_dependencies() -> None:
    project = tomllib.loads((RUNTIME_DIR / "pyproject.toml").read_text())["project"]
    assert project["name"] == "shim-runtime"
    assert project.get("dependencies", []) == []
    assert project["requires-python"] == ">=3.11"


# -- unit: protocol ----------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "expected"), [([], None), (["0"], 0), (["42"], 42), ([" 7\t"], 7), (["007"], 7)])
def test_parse_length_accepts(values: list[str], expected: int | None) -> None:
    assert parse_length(values) == expected


@pytest.mark.parametrize("values", [["-1"], ["+1"], ["1.0"], ["0x1"], [""], ["1 2"], ["\u0661"], ["1_0"],
                                    ["9" * 40], ["1", "1"]])
def test_parse_length_refuses(values: list[str]) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_length(values)
    assert info.value.status == 400


def test_parse_block_merges_text_and_binary() -> None:
    block = parse_block(BLOCK)
    assert block.version == 1
    assert block.function == FUNCTION
    assert block.secrets == {
        "db": {"username": "app", "password": PASSWORD},
        "tls": {"cert.pem": "CERT", "key.der": BINARY_KEY},
    }
    assert "w0rd" not in repr(block)


def test_parse_block_minimal() -> None:
    block = parse_block(b'{"v": 1}')
    assert (block.function, block.secrets) == ("", {})


@pytest.mark.parametrize("version", [None, 0, 2, "1", True, 1.0])
def test_parse_block_unknown_version_is_500(version: Any) -> None:
    data = json.dumps({"v": version} if version is not None else {"secrets": {}}).encode()
    with pytest.raises(ProtocolError) as info:
        parse_block(data)
    assert info.value.status == 500


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[1]",
        b'{"v": 1, "function": 3}',
        b'{"v": 1, "secrets": []}',
        b'{"v": 1, "secrets": {"db": "x"}}',
        b'{"v": 1, "secrets": {"db": {"k": 1}}}',
        b'{"v": 1, "binary": {"db": {"k": "not base64!"}}}',
        b'{"v": 1, "binary": {"db": {"k": "AAE"}}}',
        b'{"v": 1, "secrets": {"db": {"k": "a"}}, "binary": {"db": {"k": "AAE="}}}',
        b'{"v": 1, "secrets": {"db": {"k": "a", "k": "b"}}}',
        b"[" * 100000,
    ],
    ids=["empty", "text", "not-utf8", "array", "function", "secrets-list", "secret-str", "value-int",
         "bad-b64", "b64-padding", "key-in-both", "duplicate-key", "deep"],
)
def test_parse_block_malformed_is_400(data: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_block(data)
    assert info.value.status == 400


def test_protocol_errors_never_quote_the_block() -> None:
    for data in (b'{"v": 1, "secrets": {"db": {"pw": 1234567}}, "x": "leak-me"', b'{"v": "leak-me"}',
                 b'{"v": 1, "binary": {"db": {"pw": "leak-me"}}}'):
        with pytest.raises(ProtocolError) as info:
            parse_block(data)
        assert "leak" not in str(info.value) and "1234567" not in str(info.value)


def test_split_payload() -> None:
    assert split_payload([], b"body") == (None, b"body")
    block, body = split_payload([str(len(BLOCK))], BLOCK + b"\x00body")
    assert block is not None and block.function == FUNCTION
    assert body == b"\x00body"
    block, body = split_payload([str(len(BLOCK))], BLOCK)
    assert body == b""
    with pytest.raises(ProtocolError) as info:
        split_payload([str(len(BLOCK) + 1)], BLOCK)
    assert info.value.status == 400
    with pytest.raises(ProtocolError):
        split_payload(["0"], b"body")  # an empty block is not JSON


# -- unit: redaction, responses, headers -------------------------------------------------------


def test_redact_text_repr_and_binary_forms() -> None:
    secrets = {"db": {"password": PASSWORD, "empty": ""}, "tls": {"key": BINARY_KEY}}
    text = f"a {PASSWORD} b {PASSWORD!r} c {BINARY_KEY!r} d {BINARY_KEY.decode('latin-1')} e"
    result = redact(text, secrets)
    assert "w0rd" not in result and "binarysecret" not in result
    assert result.startswith("a [REDACTED] b ") and result.endswith(" e")
    accented = "p\u00e4ss-\u00fc"
    result = redact(f"{accented} {accented!r} {ascii(accented)}", {"s": {"k": accented}})
    assert result == "[REDACTED] '[REDACTED]' '[REDACTED]'"


def test_redact_overlapping_values_and_its_own_marker() -> None:
    secrets = {"s": {"a": "abcd", "b": "cdef", "c": "RED"}}
    assert redact("x abcdef y", secrets) == "x [REDACTED] y"
    assert redact("RED", secrets) == REDACTED
    assert redact("nothing here", secrets) == "nothing here"
    assert redact("anything", {}) == "anything"


def test_build_response() -> None:
    assert build_response(None).body == b""
    assert build_response("x").headers == [("Content-Type", "text/plain; charset=utf-8")]
    response = build_response({"statusCode": 404, "body": {"a": 1}, "headers": {"Content-Type": "x/y"}})
    assert (response.status, response.body, response.headers) == (404, b'{"a": 1}', [("Content-Type", "x/y")])
    for bad in ({"statusCode": "200"}, {"statusCode": 99}, {"body": 3}, {"headers": {"X": "a\r\nB: c"}},
                {"message": "hi"}, 42, {"body": {"x": object()}}):
        with pytest.raises(InvalidResponse):
            build_response(bad)


def test_headers_mapping_is_case_insensitive_and_keeps_repeats() -> None:
    headers = Headers([("Content-Type", "a"), ("X-Dup", "1"), ("x-dup", "2")])
    assert headers["content-type"] == "a" and headers.get("CONTENT-TYPE") == "a"
    assert headers.get_all("X-DUP") == ["1", "2"]
    assert list(headers) == ["Content-Type", "X-Dup"] and len(headers) == 2
    assert "x-dup" in headers and "missing" not in headers and headers.get("missing") is None


def test_secrets_view_hides_values_in_repr() -> None:
    view = secrets_view({"db": {"password": "hunter22"}})
    assert view["db"]["password"] == "hunter22"
    assert "hunter22" not in repr(view) and "hunter22" not in str(view) and "password" in repr(view)
    assert "hunter22" not in repr(Context(secrets=view, function="f", hostname="h"))
