"""``shim run`` end to end: real sidecar processes, the real Python runtime, real sockets and the CLI.

The module shares one store (``world``): secret ``sa`` (text and binary keys) bound to function ``a``,
``sb`` bound to ``b``, and ``sc`` bound to nobody, all in one namespace. Sidecars that the tests only
read from are module-scoped; a test that stops, breaks or reconfigures a sidecar starts its own.
Every value carries a random token, so any leak (raw, escaped, base64) is found by searching bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the fixtures' types (tests/e2e/conftest.py); not imported at run time, so that
    from conftest import SidecarFactory, Store  # another conftest module can never shadow it

TOKEN_A = secrets.token_hex(12)
TOKEN_BLOB = secrets.token_hex(12)
TOKEN_B = secrets.token_hex(12)
TOKEN_C = secrets.token_hex(12)
# A quote, a backslash and a non-ASCII letter: the JSON-escaped spelling differs from the raw one.
PW_A = f'pw"a\\é-{TOKEN_A}'
BLOB_A = b"\xff\xfe" + f"blob-{TOKEN_BLOB}".encode() + b"\x80"  # not UTF-8, no NUL (env delivery refuses NUL)
PW_B = f"pw-b-{TOKEN_B}"
PW_C = f"pw-c-{TOKEN_C}"

EXPECTED_A = {"sa": {"user": "alice", "password": PW_A, "blob": {"base64": base64.b64encode(BLOB_A).decode()}}}
EXPECTED_B = {"sb": {"user": "bob", "password": PW_B}}
LIMIT_BODY = b"Concurrent request limit exceeded. Max concurrent requests: 1\n"


def needles() -> list[bytes]:
    """Every spelling of every value that must never show up in logs, responses or files."""
    out: list[bytes] = []
    for value in (PW_A, PW_B, PW_C):
        out += [value.encode(), json.dumps(value)[1:-1].encode(), json.dumps(value, ensure_ascii=False)[1:-1].encode(),
                repr(value)[1:-1].encode()]
    out += [BLOB_A, base64.b64encode(BLOB_A), repr(BLOB_A)[2:-1].encode()]
    out += [t.encode() for t in (TOKEN_A, TOKEN_BLOB, TOKEN_B, TOKEN_C)]  # the random core, however escaped
    return out


def assert_no_value(data: bytes, where: str) -> None:
    for needle in needles():
        assert needle not in data, f"a secret value ({needle[:12]!r}...) leaked into {where}"


def hex_env(env_hex: dict[str, str]) -> dict[str, bytes]:
    return {k: bytes.fromhex(v) for k, v in env_hex.items()}


def secrets_digest(plain: dict) -> str:
    """As the handler computes it (HTTP_HANDLER in conftest)."""
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()


def poll(sidecar, predicate, timeout: float, path: str = "/"):
    """Invoke every 50 ms until predicate(doc) holds; return the elapsed seconds (or fail)."""
    start = time.monotonic()
    while True:
        response = sidecar.get(path)
        assert response.status == 200, (response.status, response.body)
        if predicate(response.json()):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout}s; last answer {response.body[:300]!r}")
        time.sleep(0.05)


def wait_exit(sidecar, timeout: float = 15) -> int:
    return sidecar.proc.wait(timeout)


def one_line_error(sidecar) -> str:
    err = sidecar.stderr_path.read_bytes().decode(errors="replace")
    assert "Traceback" not in err, err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert err.startswith("shim: error: "), err
    assert sidecar.stdout_path.read_bytes() == b""
    return err


# ------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def world(make_store) -> Store:
    store = make_store("world")
    store.secret("sa", {"user": "alice", "password": PW_A, "blob": BLOB_A})
    store.secret("sb", {"user": "bob", "password": PW_B})
    store.secret("sc", {"password": PW_C})  # same namespace, bound to nobody
    store.function("a")
    store.function("b")
    store.bind("sa", "a")
    store.bind("sb", "b")
    return store


@pytest.fixture(scope="module")
def sidecar_a(world, module_sidecars: SidecarFactory):
    return module_sidecars.start(world, "a")


@pytest.fixture(scope="module")
def sidecar_b(world, module_sidecars: SidecarFactory):
    return module_sidecars.start(world, "b")


@pytest.fixture(scope="module")
def env_sidecar_a(world, module_sidecars: SidecarFactory):
    return module_sidecars.start(world, "a", mode="serializing", extra_env={"VAULT_TOKEN": "bait-token-for-children"})


# ------------------------------------------------------------------------- 1. params delivery

def test_params_delivery_gives_each_function_exactly_its_bound_secrets(sidecar_a, sidecar_b) -> None:
    doc = sidecar_a.get("/").json()
    assert doc["secrets"] == EXPECTED_A  # not sb (same namespace), not sc (bound to nobody)
    assert doc["function"] == "default/default/a"
    doc = sidecar_b.get("/").json()
    assert doc["secrets"] == EXPECTED_B
    assert doc["function"] == "default/default/b"


def test_the_function_process_environment_holds_no_secret(sidecar_a) -> None:
    env = sidecar_a.get("/env").json()["env"]
    assert not [k for k in env if k.startswith(("SHIM_", "SECRET_"))], sorted(env)
    assert_no_value(json.dumps(env).encode(), "the runtime's environment")
    runtime = [pid for pid in sidecar_a.children if Path(f"/proc/{pid}").exists()]
    assert len(runtime) == 1, runtime
    assert_no_value(Path(f"/proc/{runtime[0]}/environ").read_bytes(), "/proc/<runtime>/environ")


# ----------------------------------------------------------------------- 2. body byte for byte

def test_body_method_path_and_query_arrive_byte_for_byte(sidecar_a) -> None:
    body = b"\0\0\r\n\r\n" + os.urandom(100 * 1024) + b"\0" * 64  # NULs, CRLFs, bigger than any replay buffer
    conn = sidecar_a.connection()
    try:
        # Two requests on one keep-alive connection: a framing error would corrupt the second.
        for method, path in (("POST", "/some/path"), ("PATCH", "/other")):
            target = f"{path}?x=1&y=a%20b&x=2&empty="
            r = sidecar_a.request(method, target, body, [("Content-Type", "application/octet-stream")], conn=conn)
            assert r.status == 200, r.body[:300]
            doc = r.json()
            assert doc["body_sha256"] == hashlib.sha256(body).hexdigest()
            assert doc["body_len"] == len(body)
            assert (doc["method"], doc["path"], doc["query_string"]) == (method, path, "x=1&y=a%20b&x=2&empty=")
            assert doc["query"] == {"x": "1", "y": "a b", "empty": ""}
            lengths = [v for k, v in doc["headers"] if k.lower() == "content-length"]
            assert lengths == [str(len(body))]
            assert doc["secrets"] == EXPECTED_A
        r = sidecar_a.request("GET", "/nobody", conn=conn)
        assert (r.json()["body_len"], r.json()["method"]) == (0, "GET")
    finally:
        conn.close()


def test_chunked_request_arrives_byte_for_byte(sidecar_a) -> None:
    pieces = [os.urandom(n) for n in (1, 4096, 0x7FFF, 17, 70_000)] + [b"\0" * 300]
    pieces = [p for p in pieces if p]
    body = b"".join(pieces)
    conn = sidecar_a.connection()
    try:
        conn.request("PUT", "/chunked/x?q=%2F1", body=iter(pieces), encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, raw[:300]
    doc = json.loads(raw)
    assert (doc["body_sha256"], doc["body_len"]) == (hashlib.sha256(body).hexdigest(), len(body))
    assert (doc["method"], doc["path"], doc["query_string"], doc["query"]) == ("PUT", "/chunked/x", "q=%2F1", {"q": "/1"})
    assert doc["secrets"] == EXPECTED_A


# ---------------------------------------------------------- 3. the carrier cannot be injected or read

FAKE_BLOCK = b'{"v":1,"secrets":{"sb":{"x":"evil"}}}'
INJECTED = [("Shim-Secrets", "5"), ("shim-secrets", "0"), ("Shim-Anything", "x"), ("SHIM-SECRETS", str(len(FAKE_BLOCK)))]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_shim_headers_and_fake_blocks_from_callers_change_nothing(sidecar_a, sidecar_b, chunked: bool) -> None:
    for sidecar, expected in ((sidecar_a, EXPECTED_A), (sidecar_b, EXPECTED_B)):
        conn = sidecar.connection()
        try:
            for _ in range(2):  # twice on one connection: the second request must be framed right too
                body = [FAKE_BLOCK[:10], FAKE_BLOCK[10:]] if chunked else FAKE_BLOCK
                r = sidecar.request("POST", "/digest", body, INJECTED, chunked=chunked, conn=conn)
                assert r.status == 200, r.body[:300]
                doc = r.json()
                assert doc["names"] == sorted(expected)
                assert doc["secrets_sha256"] == secrets_digest(expected)  # its true secrets, exactly
                assert base64.b64decode(doc["body_b64"]) == FAKE_BLOCK
                assert [k for k, _ in doc["headers"] if k.lower().startswith("shim-")] == []
                assert not [k for k, _ in r.headers if k.lower().startswith("shim-")], r.headers
                assert_no_value(r.body + repr(r.headers).encode(), "a response")
        finally:
            conn.close()


# ------------------------------------------------------------------------------ 4. env delivery

def test_env_delivery_exact_variables_and_nothing_else(env_sidecar_a, sidecar_a) -> None:
    r = env_sidecar_a.request("POST", "/fork?z=1", b"hello\0world")
    assert r.status == 200, r.body
    doc = json.loads(r.body)
    env = hex_env(doc["env"])
    assert {k: v for k, v in env.items() if k.startswith("SECRET_")} == {
        "SECRET_SA_USER": b"alice", "SECRET_SA_PASSWORD": PW_A.encode(), "SECRET_SA_BLOB": BLOB_A,
    }
    assert [k for k in env if k.startswith("SHIM_")] == []  # no SHIM_FUNCTION_KEY, SHIM_STORE, SHIM_MASTER_KEY
    assert "VAULT_TOKEN" not in env
    assert (env["Http_Method"], env["Http_Path"], env["Http_Query"]) == (b"POST", b"/fork", b"z=1")
    assert (doc["body_sha256"], doc["body_len"]) == (hashlib.sha256(b"hello\0world").hexdigest(), 11)
    # The sidecars' own environment and command line, read while they run and after they delivered.
    sidecar_a.get("/")
    for sidecar in (env_sidecar_a, sidecar_a):
        assert sidecar.running()
        try:
            environ = Path(f"/proc/{sidecar.pid}/environ").read_bytes()
        except PermissionError:  # the sidecar makes itself non-dumpable: only root can read it
            pytest.skip("/proc/<sidecar>/environ is unreadable to this non-root user (PR_SET_DUMPABLE=0)")
        cmdline = Path(f"/proc/{sidecar.pid}/cmdline").read_bytes()
        assert cmdline.split(b"\0")[1:4] == [b"-m", b"shim", b"run"]  # really the sidecar, not a wrapper
        assert b"SHIM_FUNCTION_KEY=" in environ and b"SHIM_MASTER_KEY" not in environ
        assert_no_value(environ, "/proc/<sidecar>/environ")
        assert_no_value(cmdline, "/proc/<sidecar>/cmdline")


# ----------------------------------------------------------------- 5. rotation and unbinding

def test_rotation_and_unbinding_within_the_ttl_bound(store: Store, sidecars: SidecarFactory) -> None:
    ttl, slack = 1.0, 1.5
    store.secret("sa", {"user": "alice", "password": "v1-" + TOKEN_A})
    store.function("a")
    store.bind("sa", "a")
    sidecar = sidecars.start(store, "a", ttl=ttl)
    assert sidecar.get("/").json()["secrets"] == {"sa": {"user": "alice", "password": "v1-" + TOKEN_A}}

    store.secret("sa", {"user": "alice", "password": "v2-" + TOKEN_A}, update=True)
    elapsed = poll(sidecar, lambda d: d["secrets"]["sa"]["password"] == "v2-" + TOKEN_A, ttl + slack + 2)
    assert elapsed <= ttl + slack, f"update seen after {elapsed:.2f}s (bound {ttl + slack}s)"
    for _ in range(3):  # and it stays seen
        assert sidecar.get("/").json()["secrets"] == {"sa": {"user": "alice", "password": "v2-" + TOKEN_A}}

    store.unbind("sa", "a")
    elapsed = poll(sidecar, lambda d: d["secrets"] == {}, ttl + slack + 2)
    assert elapsed <= ttl + slack, f"unbinding seen after {elapsed:.2f}s (bound {ttl + slack}s)"
    assert sidecar.get("/").json()["secrets"] == {}


def test_ttl_zero_sees_every_change_on_the_next_invocation(store: Store, sidecars: SidecarFactory) -> None:
    store.secret("sa", {"password": "v1"})
    store.function("a")
    store.bind("sa", "a")
    sidecar = sidecars.start(store, "a", ttl=0)
    assert sidecar.get("/").json()["secrets"] == {"sa": {"password": "v1"}}
    store.secret("sa", {"password": "v2", "extra": "e"}, update=True)
    assert sidecar.get("/").json()["secrets"] == {"sa": {"password": "v2", "extra": "e"}}
    store.unbind("sa", "a")
    assert sidecar.get("/").json()["secrets"] == {}
    store.bind("sa", "a")
    assert sidecar.get("/").json()["secrets"] == {"sa": {"password": "v2", "extra": "e"}}


# -------------------------------------------------------------- 6. broken store: 503, nothing forwarded

def test_broken_store_fails_closed_and_recovers(store: Store, sidecars: SidecarFactory) -> None:
    store.secret("sa", {"password": PW_A})
    store.function("a")
    store.bind("sa", "a")
    counter = store.root / "invocations.log"
    sidecar = sidecars.start(store, "a", ttl=0, extra_env={"E2E_COUNTER": str(counter)})

    def invocations() -> int:
        return len(counter.read_text().splitlines()) if counter.exists() else 0

    def assert_refused(response, secret_names: tuple) -> dict:
        assert response.status == 503, (response.status, response.body)
        assert response.header("Content-Type") == "application/json"
        doc = json.loads(response.body)
        assert set(doc) == {"error", "secret"} and isinstance(doc["error"], str) and doc["error"]
        assert doc["secret"] in secret_names, doc
        assert_no_value(response.body, "a 503 answer")
        return doc

    assert sidecar.get("/").json()["secrets"] == {"sa": {"password": PW_A}}
    assert invocations() == 1
    good = store.path.read_bytes()

    with open(store.path, "r+b") as f:  # corrupt in place, as a broken disk would
        f.write(os.urandom(len(good)))
    # The bindings cannot be listed: the answer names the secret bound when the store last answered.
    assert_refused(sidecar.get("/"), ("sa",))
    assert_refused(sidecar.request("POST", "/x", b"payload"), ("sa",))
    assert invocations() == 1, "the function ran although its secrets could not be fetched"

    with open(store.path, "r+b") as f:
        f.write(good)
    assert sidecar.get("/").json()["secrets"] == {"sa": {"password": PW_A}}
    assert invocations() == 2

    # One secret's rows altered (its version no longer matches what was sealed): that secret is named.
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE secrets SET version = version + 1 WHERE name = 'sa'")
    db.close()
    assert_refused(sidecar.get("/"), ("sa",))
    assert invocations() == 2
    with open(store.path, "r+b") as f:
        f.write(good)
        f.truncate()
    assert sidecar.get("/").json()["secrets"] == {"sa": {"password": PW_A}}

    store.cli("secret", "delete", "sa")  # deleting a bound secret removes its bindings: no secret, no error
    assert sidecar.get("/").json()["secrets"] == {}
    assert invocations() == 4
    assert sidecar.stop() == 0
    assert_no_value(sidecar.output(), "the sidecar's output")


# ------------------------------------------------------------------------ 7. no log line holds a value

def test_no_log_line_contains_a_value(world, sidecars: SidecarFactory) -> None:
    http = sidecars.start(world, "a", ttl=5)
    fork = sidecars.start(world, "a", mode="serializing", ttl=5)
    statuses: list[int] = []
    for method, path, body, headers in (
        ("GET", "/digest", None, ()),
        ("POST", "/digest/bin", os.urandom(2048), ()),
        ("POST", "/digest", FAKE_BLOCK, INJECTED),
        ("GET", "/raise", None, ()),   # the exception message quotes the password
        ("GET", "/print", None, ()),   # print()s it to stdout (buffered) and stderr
        ("GET", "/print", None, ()),
    ):
        r = http.request(method, path, body, headers)
        assert_no_value(r.body, f"the answer to {path}")
        statuses.append(r.status)
    assert statuses == [200, 200, 200, 500, 200, 200]
    fork_statuses = []
    for path in ("/print", "/print", "/print"):  # the child prints its SECRET_* values to stderr
        r = fork.request("POST", path, b"x")
        assert r.body == b"printed\n"
        fork_statuses.append(r.status)
    assert fork_statuses == [200, 200, 200]
    time.sleep(0.3)  # let the relays see the output while the values are known
    assert (http.stop(), fork.stop()) == (0, 0)

    for sidecar, expected in ((http, statuses), (fork, fork_statuses)):
        output = sidecar.output()
        assert_no_value(output, "the sidecar's stdout/stderr")
        events = sidecar.log_events()
        assert len(events) == len(output.splitlines()), "every line is a JSON event"
        invocations = [e for e in events if e.get("event") == "invocation"]
        assert [e["status"] for e in invocations] == expected
        for event in invocations:
            assert event["function"] == "default/default/a"
            assert event["secrets"] == ["sa"]
            assert isinstance(event["duration_ms"], (int, float)) and 0 <= event["duration_ms"] < 10_000
    # The handler's output did reach the log, scrubbed: the traceback, both prints, the repr of bytes.
    http_out = http.output().decode()
    assert "RuntimeError: cannot connect with password [REDACTED]" in http_out
    assert http_out.count("stderr says [REDACTED]") == 2
    assert http_out.count("repr says b'[REDACTED]'") == 2
    assert http_out.count("stdout says [REDACTED]") == 2  # a block-buffered pipe: flushed when the runtime exits
    fork_out = fork.output().decode()
    for name in ("SECRET_SA_PASSWORD", "SECRET_SA_USER", "SECRET_SA_BLOB"):
        assert fork_out.count(f"stderr says {name} [REDACTED]") == 3, name
        assert fork_out.count(f"raw says {name} [REDACTED]") == 3, name


def test_output_relayed_after_the_cache_went_stale_is_still_redacted(world, sidecars: SidecarFactory) -> None:
    """A function's block-buffered stdout reaches the sidecar late (here: when the runtime exits),
    after the sidecar has dropped the values from its cache (TTL 1 s, idle for longer)."""
    sidecar = sidecars.start(world, "a", ttl=0.2)
    assert sidecar.get("/print").body == b"printed"
    time.sleep(1.5)  # the sweeper (every max(ttl, 1 s)) has dropped the stale snapshot
    assert sidecar.stop() == 0
    output = sidecar.output()
    assert output.decode().count("stdout says [REDACTED]") == 1
    assert_no_value(output, "the sidecar's stdout/stderr")

# ------------------------------------------------------------------------ 8. no file holds a value

OPEN_RE = re.compile(r"^(\d+)\s+(open|openat|creat|rename|renameat|renameat2|link|symlink)\((.*)$")
WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")


def written_paths(trace: Path) -> list[tuple[str, str]]:
    """(syscall, path) for every open for writing, creat, rename and link in an strace -f log."""
    found = []
    for line in trace.read_text(errors="replace").splitlines():
        match = OPEN_RE.match(line)
        if not match:
            continue
        call, args = match.group(2), match.group(3)
        paths = re.findall(r'"((?:[^"\\]|\\.)*)"', args)
        if call in ("open", "openat"):
            if any(flag in args for flag in WRITE_FLAGS):
                found.append((call, paths[0] if paths else args))
        else:
            found.append((call, " -> ".join(paths) or args))
    return found


def test_no_file_is_written_with_a_value(world, sidecars: SidecarFactory, strace_path: str, tmp_path) -> None:
    traces = {}
    started = []
    for mode in ("http", "serializing"):
        trace = tmp_path / f"trace-{mode}.txt"
        # Bytecode caches are the interpreter's, not shim's; without them the allowed set stays minimal.
        sidecar = sidecars.start(world, "a", mode=mode, ttl=5, extra_env={"PYTHONDONTWRITEBYTECODE": "1"},
                                 wrapper=[strace_path, "-f", "-qq", "-s", "4096", "-o", str(trace), "-e",
                                          "trace=openat,open,creat,rename,renameat,renameat2,link,symlink"])
        traces[mode] = (sidecar, trace)
        started.append(sidecar)
    http, fork = traces["http"][0], traces["serializing"][0]
    for path in ("/digest", "/print", "/raise", "/digest"):
        assert http.request("POST", path, b"body").status in (200, 500)
    for path in ("/", "/print"):
        assert fork.request("POST", path, b"body").status == 200
    for sidecar in started:
        assert sidecar.stop() == 0

    for mode, (sidecar, trace) in traces.items():
        assert trace.stat().st_size > 0
        allowed = {str(sidecar.lock_path), "/dev/null"}
        writes = written_paths(trace)
        assert ("openat", str(sidecar.lock_path)) in writes or ("open", str(sidecar.lock_path)) in writes, \
            "the trace does not show the lock file being written: is the trace complete?"
        assert [w for w in writes if w[1] not in allowed] == [], f"{mode}: files written"

    # And no file anywhere under this test's directories or the store's holds a value.
    for root in (tmp_path, world.root):
        for path in root.rglob("*"):
            if path.is_file():
                assert_no_value(path.read_bytes(), str(path))  # the store file too: ciphertext only
    assert world.path.stat().st_size > 0


# ----------------------------------------------- 9. A's credential opens none of B's secrets

def test_a_credential_with_the_whole_store_opens_nothing_of_b(world, make_store, sidecars: SidecarFactory,
                                                              tmp_path) -> None:
    copy = make_store("copy")
    shutil.copy2(world.path, copy.path)
    a_key = world.keys["a"]

    refused = sidecars.spawn(copy, "b", key=a_key)
    assert wait_exit(refused) == 1
    err = one_line_error(refused)
    assert "default/default/b" in err and "credential" in err

    # A's credential relabelled as B's: the key itself still does not match B's.
    forged = tmp_path / "forged.key"
    doc = json.loads(a_key.read_bytes())
    doc["function"] = "default/default/b"
    forged.write_text(json.dumps(doc))
    refused = sidecars.spawn(copy, "b", key=forged)
    assert wait_exit(refused) == 1
    one_line_error(refused)

    sidecar = sidecars.start(copy, "a", key=a_key)
    assert sidecar.get("/").json()["secrets"] == EXPECTED_A


# ------------------------------------------------------------------------------ 10. health, ready

def test_health_ready_drain_and_lock_file(world, sidecars: SidecarFactory) -> None:
    sidecar = sidecars.start(world, "a", extra_env={"healthcheck_interval": "2"})
    r = sidecar.get("/_/health")
    assert (r.status, r.body) == (200, b"OK")
    assert sidecar.get("/_/ready").status == 200
    assert sidecar.request("POST", "/_/health", b"").status == 405
    assert sidecar.request("POST", "/_/ready", b"").status == 405
    assert sidecar.lock_path.is_file()

    os.kill(sidecar.pid, signal.SIGTERM)
    time.sleep(0.1)
    seen = []
    deadline = time.monotonic() + 0.8  # well inside the 2 s window, even on a slow machine
    while time.monotonic() < deadline:
        seen.append((sidecar.get("/_/health").status, sidecar.get("/_/ready").status))
        time.sleep(0.05)
    assert len(seen) >= 3 and set(seen) == {(503, 503)}, seen
    assert not sidecar.lock_path.exists()
    assert wait_exit(sidecar) == 0
    assert not sidecar.lock_path.exists()


# ------------------------------------------------------------------------------ 11. max_inflight

def test_max_inflight_answers_429_with_the_watchdog_text(world, sidecars: SidecarFactory) -> None:
    sidecar = sidecars.start(world, "a", extra_env={"max_inflight": "1"})
    results = {}
    slow = threading.Thread(target=lambda: results.setdefault("slow", sidecar.get("/slow")))
    slow.start()
    deadline = time.monotonic() + 5
    while sidecar.get("/_/ready").status != 429:  # the slow call is in flight
        assert time.monotonic() < deadline, "the slow call never became in-flight"
        time.sleep(0.02)
    r = sidecar.get("/")
    assert (r.status, r.body) == (429, LIMIT_BODY)
    slow.join(10)
    assert (results["slow"].status, results["slow"].body) == (200, b"slow done")
    assert sidecar.get("/").status == 200


# -------------------------------------------------------------------------- 12. fail closed at start

@pytest.mark.parametrize("case", ["missing key file", "garbage key file", "missing store", "unknown function"])
def test_start_fails_closed_with_one_line(world, make_store, sidecars: SidecarFactory, tmp_path, case: str) -> None:
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"not a credential\n")
    kw: dict = {"missing key file": {"key": tmp_path / "no" / "such.key"},
                "garbage key file": {"key": garbage},
                "unknown function": {"key": world.keys["a"]},
                "missing store": {}}[case]
    store = world
    if case == "missing store":
        store = make_store("nostore")  # never administered: its file does not exist
        store.keys["a"] = world.keys["a"]
    sidecar = sidecars.spawn(store, "nosuch" if case == "unknown function" else "a", **kw)
    code = wait_exit(sidecar)
    assert code == (2 if case.endswith("key file") else 1), code
    err = one_line_error(sidecar)
    if case == "missing key file":
        assert str(tmp_path / "no" / "such.key") in err
    assert_no_value(err.encode(), "a start-up error")
