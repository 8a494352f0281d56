"""HTTP/1.1 at the edges of the sidecar's protocol-level server, over raw sockets where the client library
would hide what is on the wire: HEAD, Expect: 100-continue, pipelining, malformed requests, idle callers,
the function timing out or dying, and the streaming fork mode."""

from __future__ import annotations

import json
import socket
import time

import pytest

from conftest import SidecarFactory, Store


@pytest.fixture(scope="module")
def world(make_store) -> Store:
    store = make_store("edges")
    store.secret("sa", {"password": "edge-pw-0451"})
    store.function("a")
    store.bind("sa", "a")
    return store


@pytest.fixture(scope="module")
def sidecar(world, module_sidecars: SidecarFactory):
    return module_sidecars.start(world, "a", extra_env={"exec_timeout": "0.5s", "read_timeout": "1s"})


def raw(port: int, data: bytes, *, read_until: int = 1, timeout: float = 5) -> bytes:
    """Send bytes, read until ``read_until`` complete responses (by Content-Length) or EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_responses(sock, read_until)


def read_responses(sock: socket.socket, count: int) -> bytes:
    buffer = b""
    while _complete_responses(buffer) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    return buffer


def _complete_responses(buffer: bytes) -> int:
    done, rest = 0, buffer
    while b"\r\n\r\n" in rest:
        head, rest = rest.split(b"\r\n\r\n", 1)
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        if head.startswith(b"HTTP/1.1 100"):
            continue
        if len(rest) < length:
            break
        rest = rest[length:]
        done += 1
    return done


def bodies(buffer: bytes) -> list[dict]:
    out = []
    for part in buffer.split(b"HTTP/1.1 ")[1:]:
        if part.startswith(b"100"):
            continue
        out.append(json.loads(part.split(b"\r\n\r\n", 1)[1]))
    return out


def test_head_has_no_body_and_keeps_the_connection(sidecar):
    conn = sidecar.connection()
    first = sidecar.request("HEAD", "/digest", conn=conn)
    second = sidecar.request("GET", "/digest/again", conn=conn)  # the same connection still works
    assert first.status == 200 and first.body == b"" and int(first.header("Content-Length")) > 0
    assert second.status == 200 and second.json()["path"] == "/digest/again"


def test_expect_100_continue_is_answered_before_the_body_is_sent(sidecar):
    body = b"x" * 5000
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=5) as sock:
        sock.sendall(b"POST /digest HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
        interim = sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = read_responses(sock, 1)
    described = bodies(answer)[0]
    assert described["body_len"] == 5000
    assert "expect" not in {name.lower() for name, _ in described["headers"]}


def test_pipelined_requests_are_answered_in_order(sidecar):
    requests = b"".join(
        b"POST /digest/%d HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (i, len(b"n%d" % i), b"n%d" % i)
        for i in range(5)
    )
    answer = raw(sidecar.port, requests, read_until=5)
    described = bodies(answer)
    assert [d["path"] for d in described] == [f"/digest/{i}" for i in range(5)]
    assert [d["body_len"] for d in described] == [2, 2, 2, 2, 2]


def test_a_malformed_request_gets_400_and_a_closed_connection(sidecar):
    answer = raw(sidecar.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in answer


def test_an_idle_caller_is_let_go_after_read_timeout(sidecar):
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=5) as sock:
        sock.sendall(b"GET /digest HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_responses(sock, 1).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(10) == b""  # closed by the sidecar, not by us
        waited = time.monotonic() - started
    assert 0.8 < waited < 3.0


def test_a_slow_function_gets_504_and_the_next_invocation_still_works(sidecar):
    slow = sidecar.get("/slow")
    assert slow.status == 504 and slow.header("X-OpenFaaS-Internal") == "shim"
    assert b"edge-pw-0451" not in slow.body
    time.sleep(0.7)  # the runtime finishes the slow call
    assert sidecar.get("/digest").status == 200


def test_the_sidecar_ends_when_its_function_process_dies(world, sidecars: SidecarFactory):
    dying = "import os\ndef handle(event, context):\n    os._exit(3)\n"
    sidecar = sidecars.start(world, "a", handler=dying)
    try:
        answer = sidecar.get("/")
    except OSError:  # the sidecar may already be gone
        pass
    else:  # or it answers for the function that closed without a word
        assert (answer.status, answer.header("X-OpenFaaS-Internal")) == (500, "shim")
    deadline = time.monotonic() + 10
    while sidecar.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sidecar.proc.returncode == 1
    assert not sidecar.lock_path.exists()
    events = [e["event"] for e in sidecar.log_events()]
    assert "function process exited" in events


def test_streaming_mode_streams_the_env_delivered_function(world, sidecars: SidecarFactory):
    sidecar = sidecars.start(world, "a", mode="streaming")
    answer = sidecar.request("POST", "/s", b"streamed body")
    assert answer.status == 200 and answer.header("Transfer-Encoding") == "chunked"
    env = {k: bytes.fromhex(v) for k, v in answer.json()["env"].items()}
    assert env["SECRET_SA_PASSWORD"] == b"edge-pw-0451"
    assert answer.json()["body_len"] == len(b"streamed body")


def test_serializing_mode_reports_a_failing_function_as_the_watchdog_does(world, sidecars: SidecarFactory):
    failing = "import sys\nsys.stdin.read()\nsys.exit(3)\n"
    sidecar = sidecars.start(world, "a", mode="serializing", handler=failing)
    answer = sidecar.request("POST", "/", b"in")
    assert (answer.status, answer.body) == (500, b"exit status 3\n")


def test_a_caller_leaving_mid_upload_frees_the_function_connection(world, sidecars: SidecarFactory):
    """With no exec_timeout, only the sidecar can end a forwarded request whose caller vanished."""
    sidecar = sidecars.start(world, "a", extra_env={"exec_timeout": "0"})
    function_pid = next(iter(sidecar.children))
    pooled = _established_connections(function_pid)  # idle keep-alive connections the sidecar holds
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", sidecar.port), timeout=5) as sock:
            sock.sendall(b"POST /digest HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            time.sleep(0.2)
    time.sleep(0.3)
    connections = _established_connections(function_pid)
    assert connections <= pooled, f"the function holds {connections - pooled} connection(s) for callers that left"
    assert sidecar.get("/digest").status == 200


def _established_connections(pid: int) -> int:
    """TCP connections the process holds, from /proc (no tools needed)."""
    import os

    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[9] in inodes and fields[3] == "01":  # 01: ESTABLISHED
                    count += 1
    return count


def test_a_credential_others_can_read_is_warned_about(world, sidecars: SidecarFactory, tmp_path):
    shared = tmp_path / "shared.key"
    shared.write_bytes(world.keys["a"].read_bytes())
    shared.chmod(0o644)
    sidecar = sidecars.start(world, "a", key=shared)
    sidecar.stop()
    warnings = [e for e in sidecar.log_events() if e["event"] == "the function credential is readable by other users"]
    assert warnings and warnings[0]["mode"] == "0o644"
    private = sidecars.start(world, "a")  # the store's own key file is 0600: no warning
    private.stop()
    assert not [e for e in private.log_events() if "readable by other users" in e["event"]]


def test_an_http_1_0_caller_gets_an_answer_framed_for_http_1_0(world, sidecars: SidecarFactory):
    """A function that answers HTTP/1.1 requests chunked: the 1.0 caller must not get chunks it cannot read."""
    import socketserver
    import threading

    class Chunky(socketserver.StreamRequestHandler):
        def handle(self):
            request_line = self.rfile.readline()
            length = 0
            while (line := self.rfile.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            self.rfile.read(length)
            if request_line.rstrip().endswith(b"HTTP/1.1"):
                self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
            else:
                self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Chunky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sidecar = sidecars.start(world, "a", extra_env={
            "fprocess": "", "upstream_url": f"http://127.0.0.1:{server.server_address[1]}"})
        answer = raw(sidecar.port, b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")
        assert answer.endswith(b"\r\n\r\nhello") and b"chunked" not in answer.lower(), answer
        chunked = raw(sidecar.port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
        assert b"Transfer-Encoding: chunked" in chunked  # an HTTP/1.1 caller still gets the function's framing
    finally:
        server.shutdown()
