"""``shim demo``, driven from the outside: ``python -m shim demo ...`` with real sidecars and sockets.

Each run gets its own port and demo directory under tmp_path. The secret values are read back from
the demo's store afterwards (the demo generates its api-tokens at random), so the tests can check that
none of them reached the demo's output or the sidecars' logs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

GREETINGS = {"alpha-secret": "hello from alpha", "beta-secret": "hello from beta"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIM_")}
    env.update(PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
    return env


def demo_command(port: int, directory: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "shim", "demo", "--port", str(port), "--dir", str(directory), *extra]


def stored_values(directory: Path) -> dict[str, dict[str, str]]:
    """Every value in the demo store, read with the demo's own store URL and master key file."""
    env = {**clean_env(), "SHIM_STORE": f"embedded:{directory / 'store.db'}",
           "SHIM_MASTER_KEY_FILE": str(directory / "master.key")}
    values = {}
    for secret in GREETINGS:
        proc = subprocess.run([sys.executable, "-m", "shim", "secret", "get", secret, "--reveal", "--json"],
                              capture_output=True, env=env, timeout=30, check=True)
        values[secret] = json.loads(proc.stdout)["data"]
    return values


def test_demo_once_passes_every_check_and_shows_no_secret_value(tmp_path: Path) -> None:
    port, directory = free_port(), tmp_path / "demo"
    started = time.monotonic()
    proc = subprocess.run(demo_command(port, directory, "--once"), capture_output=True, env=clean_env(),
                          cwd=tmp_path, timeout=60)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, out + err
    assert time.monotonic() - started < 15

    checks = [line.strip() for line in out.splitlines() if line.strip().startswith(("✓", "✗"))]
    assert checks and all(line.startswith("✓") for line in checks), out
    expected = [
        "alpha received its own secret alpha-secret",
        "alpha got the real value of alpha-secret's greeting: 'hello from alpha'",
        "beta-secret (bound to beta) is not among alpha's secrets",
        "a caller cannot hand alpha a secret",
        "beta got SECRET_BETA_SECRET_GREETING='hello from beta'",
        "no SECRET_ALPHA_* variable",
        "no secret value in",
    ]
    for fragment in expected:
        assert any(fragment in line for line in checks), (fragment, out)
    assert "All 9 checks passed" in out

    # The demo shows the greetings the functions returned, and no other value; the logs show none.
    values = stored_values(directory)
    assert {name: data["greeting"] for name, data in values.items()} == GREETINGS
    tokens = [data["api-token"] for data in values.values()]
    assert len(set(tokens)) == 2 and all(len(token) >= 16 for token in tokens)
    master_key = (directory / "master.key").read_text().strip()
    for value in [*tokens, master_key]:
        assert value not in out and value not in err
    logs = sorted(directory.glob("sidecar-*.log"))
    assert [p.name for p in logs] == ["sidecar-alpha.log", "sidecar-beta.log"]
    for log in logs:
        text = log.read_text()
        assert '"event": "invocation"' in text
        for value in [*GREETINGS.values(), *tokens, master_key]:
            assert value not in text, log.name

    # Private files, and nothing left listening.
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in ("master.key", "alpha.key", "beta.key"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    assert not listening(port)


def test_demo_serves_until_interrupted(tmp_path: Path) -> None:
    port, directory = free_port(), tmp_path / "demo"
    proc = subprocess.Popen(demo_command(port, directory), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=clean_env(), cwd=tmp_path)
    try:
        seen = []
        assert proc.stdout is not None
        for raw in proc.stdout:
            seen.append(raw.decode())
            if "Press Ctrl-C" in seen[-1]:
                break
        out = "".join(seen)
        assert "Press Ctrl-C" in out, out + proc.stderr.read().decode()  # type: ignore[union-attr]
        assert f"curl -s localhost:{port}/ -d 'hi'" in out
        assert f"SHIM_MASTER_KEY_FILE={directory / 'master.key'}" in out

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(urllib.request.Request(f"http://127.0.0.1:{port}/", data=b"hi"), timeout=10) as response:
            doc = json.loads(response.read())
        assert doc["secrets"] == {"alpha-secret": ["api-token", "greeting"]}
        assert doc["greeting"] == "hello from alpha"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert "Stopped." in proc.stdout.read().decode()
        assert not listening(port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_demo_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(demo_command(port, tmp_path / "demo", "--once"), capture_output=True,
                              env=clean_env(), cwd=tmp_path, timeout=30)
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert err.count("\n") == 1 and f"port {port}" in err and "--port" in err
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("what", ["file", "directory"])
def test_demo_does_not_wipe_a_directory_of_its_own(tmp_path: Path, what: str) -> None:
    target = tmp_path / "precious"
    if what == "file":
        target.write_text("keep me")
        kept = target
    else:
        target.mkdir()
        kept = target / "notes.txt"
        kept.write_text("keep me")
    proc = subprocess.run(demo_command(free_port(), target, "--once"), capture_output=True,
                          env=clean_env(), cwd=tmp_path, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.decode().count("\n") == 1 and "--dir" in proc.stderr.decode()
    assert kept.read_text() == "keep me"
