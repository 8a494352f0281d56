"""The ``shim`` command line, driven from the outside as a user would: ``python -m shim ...``.

Every run uses its own embedded store under tmp_path. Values used in these tests are distinctive
strings so that a leak into stdout or stderr is easy to spot.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

MASTER_KEY = base64.b64encode(bytes(range(32))).decode()
PASSWORD = "hunter2-Zq9-do-not-print"
USERNAME = "admin-Xk7-do-not-print"
BINARY = b"\xff\xfe\x00\x80raw-Vw3\xc3"  # not valid UTF-8
SECRETS_IN_PLAY = [PASSWORD, USERNAME, "raw-Vw3"]


class Shim:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.store_url = f"embedded:{tmp_path / 'store.db'}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIM_", "XDG_"))}
        self.env.update(
            SHIM_STORE=self.store_url,
            SHIM_MASTER_KEY=MASTER_KEY,
            XDG_CONFIG_HOME=str(tmp_path / "config"),
            XDG_DATA_HOME=str(tmp_path / "data"),
            PYTHONUNBUFFERED="1",
        )
        self.outputs: list[bytes] = []  # everything shim printed without --reveal

    def __call__(self, *args: str, input: bytes | None = None, env: dict | None = None,
                 reveal_ok: bool = False) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "shim", *args], input=input if input is not None else b"",
            capture_output=True, env={**self.env, **(env or {})}, cwd=self.tmp, timeout=60,
        )
        if not reveal_ok and "--reveal" not in args and not (args[:2] == ("function", "create")):
            self.outputs.append(proc.stdout + proc.stderr)
        return proc

    def ok(self, *args: str, **kw) -> subprocess.CompletedProcess:
        proc = self(*args, **kw)
        assert proc.returncode == 0, (args, proc.returncode, proc.stderr.decode(errors="replace"))
        assert proc.stderr.count(b"\n") <= 1 and b"Traceback" not in proc.stderr
        return proc

    def json(self, *args: str, **kw):
        return json.loads(self.ok(*args, "--json", **kw).stdout)


@pytest.fixture
def shim(tmp_path: Path) -> Shim:
    return Shim(tmp_path)


def assert_bad(proc: subprocess.CompletedProcess, status: int = 2, *, mentions: str | None = None) -> str:
    """Exit status as given, one line on stderr starting 'shim: error:', no traceback, no stdout."""
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == status, (proc.returncode, err)
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert err.startswith("shim: error: "), err
    assert proc.stdout == b"", proc.stdout
    if mentions:
        assert mentions in err, err
    return err


def assert_no_values(data: bytes, *values: str) -> None:
    for value in values or SECRETS_IN_PLAY:
        assert value.encode() not in data, f"value {value!r} leaked: {data!r}"


# ---------------------------------------------------------------- secrets


def test_create_get_hidden_reveal_and_json(shim: Shim) -> None:
    out = shim.ok("secret", "create", "db", f"username={USERNAME}", f"password={PASSWORD}").stdout.decode()
    assert "default/default/db" in out and "created" in out
    assert "password" in out and "username" in out

    hidden = shim.ok("secret", "get", "db").stdout.decode()
    assert "default/default/db" in hidden
    assert f"<hidden, {len(PASSWORD)} bytes>" in hidden
    assert f"<hidden, {len(USERNAME)} bytes>" in hidden

    doc = shim.json("secret", "get", "db")
    assert set(doc) == {"name", "version", "keys"}
    assert doc["name"] == "default/default/db" and doc["keys"] == ["password", "username"]
    assert isinstance(doc["version"], int)

    revealed = shim.ok("secret", "get", "db", "--reveal").stdout.decode()
    assert PASSWORD in revealed and USERNAME in revealed

    doc = shim.json("secret", "get", "default/db", "--reveal")
    assert doc["data"] == {"password": PASSWORD, "username": USERNAME}
    assert doc["binary"] == {}
    assert doc["keys"] == ["password", "username"]

    assert_no_values(b"".join(shim.outputs))


def test_value_splits_at_first_equals_and_may_follow_options(shim: Shim, tmp_path: Path) -> None:
    (tmp_path / "cert").write_bytes(b"CERT")
    shim.ok("secret", "create", "cfg", "--from-file", "cert=cert", "url=a=b=c", "empty=")
    doc = shim.json("secret", "get", "cfg", "--reveal")
    assert doc["data"] == {"cert": "CERT", "url": "a=b=c", "empty": ""}


def test_names_take_namespace_and_org_options(shim: Shim) -> None:
    shim.ok("secret", "create", "-n", "team", "db", "k=v")
    shim.ok("secret", "create", "--org", "acme", "--namespace", "ops", "db", "k=v")
    assert shim.json("secret", "get", "team/db")["name"] == "default/team/db"
    assert shim.json("secret", "get", "acme/ops/db")["name"] == "acme/ops/db"
    assert_bad(shim("secret", "get", "db"), 2)  # default/default/db was never created


def test_list_names_and_keys_never_values(shim: Shim) -> None:
    shim.ok("secret", "create", "db", f"password={PASSWORD}", f"username={USERNAME}")
    shim.ok("secret", "create", "staging/api", f"token={PASSWORD}")
    shim.ok("secret", "create", "other/staging/x", f"token={PASSWORD}")

    everything = shim.json("secret", "list")
    assert [s["name"] for s in everything] == ["default/default/db", "default/staging/api"]
    assert everything[0]["keys"] == ["password", "username"]
    assert set(everything[0]) == {"name", "version", "keys"}

    assert [s["name"] for s in shim.json("secret", "list", "--namespace", "staging")] == ["default/staging/api"]
    assert [s["name"] for s in shim.json("secret", "list", "--org", "other")] == ["other/staging/x"]
    assert shim.json("secret", "list", "-n", "nothing-here") == []

    table = shim.ok("secret", "list").stdout.decode()
    assert "default/default/db" in table and "default/staging/api" in table and "password, username" in table
    assert "other/staging/x" not in table
    assert_no_values(b"".join(shim.outputs))


def test_update_replaces_all_keys(shim: Shim) -> None:
    shim.ok("secret", "create", "db", "old=1", "kept=2")
    before = shim.json("secret", "get", "db")["version"]
    out = shim.ok("secret", "update", "db", "kept=3", "new=4").stdout.decode()
    assert "updated" in out
    doc = shim.json("secret", "get", "db", "--reveal")
    assert doc["data"] == {"kept": "3", "new": "4"}
    assert doc["version"] > before
    assert_bad(shim("secret", "update", "missing", "k=v"), 2, mentions="missing")


def test_delete(shim: Shim) -> None:
    shim.ok("secret", "create", "db", "k=v")
    assert "deleted" in shim.ok("secret", "delete", "db").stdout.decode()
    assert_bad(shim("secret", "get", "db"), 2)
    assert shim.json("secret", "list") == []
    assert_bad(shim("secret", "delete", "db"), 2)


def test_from_file_and_from_stdin_bytes(shim: Shim, tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(BINARY)
    (tmp_path / "pw.txt").write_text(PASSWORD)
    shim.ok("secret", "create", "files", "--from-file", f"blob={tmp_path / 'blob.bin'}",
            "--from-file", "pw=pw.txt", "--from-stdin", "piped", input=BINARY + b"-stdin")

    doc = shim.json("secret", "get", "files", "--reveal")
    assert doc["data"] == {"pw": PASSWORD}
    assert base64.b64decode(doc["binary"]["blob"]) == BINARY
    assert base64.b64decode(doc["binary"]["piped"]) == BINARY + b"-stdin"
    assert doc["keys"] == ["blob", "piped", "pw"]

    human = shim.ok("secret", "get", "files", "--reveal").stdout.decode()
    assert base64.b64encode(BINARY).decode() in human and "base64" in human
    assert PASSWORD in human

    hidden = shim.ok("secret", "get", "files").stdout
    assert f"<hidden, {len(BINARY)} bytes>".encode() in hidden
    assert base64.b64encode(BINARY) not in hidden

    # update takes the same value options
    shim.ok("secret", "update", "files", "--from-stdin", "only", input=b"\x00\x01")
    doc = shim.json("secret", "get", "files", "--reveal")
    assert doc["keys"] == ["only"] and doc["data"] == {"only": "\x00\x01"}
    assert_no_values(b"".join(shim.outputs))


def test_unreadable_file_names_the_path(shim: Shim, tmp_path: Path) -> None:
    err = assert_bad(shim("secret", "create", "db", "--from-file", "k=does-not-exist.txt"), 2)
    assert "does-not-exist.txt" in err
    err = assert_bad(shim("secret", "create", "db", "--from-file", f"k={tmp_path}"), 2)
    assert str(tmp_path) in err


# ---------------------------------------------------------------- functions


def test_function_create_key_out_0600_and_refuses_existing(shim: Shim, tmp_path: Path) -> None:
    key = tmp_path / "fn.key"
    out = shim.ok("function", "create", "fn", "--key-out", str(key)).stdout
    assert key.exists() and key.stat().st_size > 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    credential = key.read_bytes()
    assert credential not in out  # the credential went to the file only

    # an existing file is never overwritten, and no function is created for a credential nobody gets
    err = assert_bad(shim("function", "create", "fn2", "--key-out", str(key)), 2)
    assert str(key) in err
    assert key.read_bytes() == credential
    assert shim.json("function", "list") == ["default/default/fn"]

    # the function itself exists: a second create of it fails, and leaves no key file behind
    other = tmp_path / "other.key"
    assert_bad(shim("function", "create", "fn", "--key-out", str(other)), 2)
    assert not other.exists()


def test_function_create_to_stdout_list_and_delete(shim: Shim) -> None:
    proc = shim.ok("function", "create", "team/fn")
    assert proc.stdout.strip(), "the credential goes to stdout"
    assert "default/team/fn" in proc.stderr.decode()
    assert shim.json("function", "list") == ["default/team/fn"]  # all namespaces of the org, like secret list
    assert shim.json("function", "list", "-n", "default") == []
    assert shim.json("function", "list", "--org", "other") == []
    assert shim.json("function", "list", "--namespace", "team") == ["default/team/fn"]
    assert "default/team/fn" in shim.ok("function", "list", "-n", "team").stdout.decode()
    shim.ok("function", "delete", "team/fn")
    assert shim.json("function", "list", "-n", "team") == []
    assert_bad(shim("function", "delete", "team/fn"), 2)


# ---------------------------------------------------------------- bindings


def test_bind_unbind_bindings(shim: Shim, tmp_path: Path) -> None:
    shim.ok("secret", "create", "db", f"password={PASSWORD}")
    shim.ok("secret", "create", "api", f"token={USERNAME}")
    shim.ok("function", "create", "fn", "--key-out", str(tmp_path / "fn.key"))
    shim.ok("function", "create", "other", "--key-out", str(tmp_path / "other.key"))

    assert "bound" in shim.ok("bind", "db", "fn").stdout.decode()
    shim.ok("bind", "default/default/api", "default/fn")
    shim.ok("bind", "api", "other")
    assert shim.json("bindings", "fn") == [
        {"function": "default/default/fn", "secret": "default/default/api"},
        {"function": "default/default/fn", "secret": "default/default/db"},
    ]
    assert len(shim.json("bindings")) == 3
    table = shim.ok("bindings").stdout.decode()
    assert "default/default/other" in table and "default/default/db" in table

    assert "unbound" in shim.ok("unbind", "db", "fn").stdout.decode()
    assert shim.json("bindings", "fn") == [{"function": "default/default/fn", "secret": "default/default/api"}]

    # deleting a secret removes its bindings
    shim.ok("secret", "delete", "api")
    assert shim.json("bindings") == []
    assert_no_values(b"".join(shim.outputs))


def test_bind_across_namespaces_is_bad_input(shim: Shim, tmp_path: Path) -> None:
    shim.ok("secret", "create", "team/db", "k=v")
    shim.ok("function", "create", "fn", "--key-out", str(tmp_path / "fn.key"))
    assert_bad(shim("bind", "team/db", "fn"), 2)
    assert_bad(shim("bind", "nosuch", "fn"), 2)
    assert shim.json("bindings") == []


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("args", [
    ["secret", "create", "ab/../x", "k=v"],
    ["secret", "create", "UPPER", "k=v"],
    ["secret", "create", "a/b/c/d", "k=v"],
    ["secret", "create", "-n", "Bad_NS", "db", "k=v"],
    ["secret", "get", "x/"],
    ["function", "create", "under_score"],
    ["bind", "db", "-bad-"],
    ["secret", "create", "db", "bad key=v"],
    ["secret", "create", "db", "k/ey=v"],
    ["secret", "create", "db", "no-equals-sign"],
    ["secret", "create", "db", "=v"],
    ["secret", "create", "db", "k=1", "k=2"],
    ["secret", "create", "db", "k=1", "--from-file", "k=/dev/null"],
    ["secret", "create", "db"],
    ["secret", "create", "db", "--from-file", "no-path"],
    ["secret", "get"],
    ["secret", "frobnicate"],
    ["nonsense"],
    [],
    ["secret", "list", "--bogus"],
    ["--store", "nosuch:/x", "secret", "list"],
    ["secret", "list", "--store", "nosuch:/x"],
    ["--store", "no-scheme-here", "secret", "get", "db"],
])
def test_bad_input_exits_2_with_one_line(shim: Shim, args: list[str]) -> None:
    assert_bad(shim(*args), 2)


def test_bad_input_messages_say_what(shim: Shim) -> None:
    assert_bad(shim("secret", "create", "ab/../x", "k=v"), mentions="'..'")
    assert_bad(shim("secret", "create", "db", "bad key=v"), mentions="bad key")
    assert_bad(shim("secret", "create", "db", "nokey"), mentions="KEY=VALUE")
    assert_bad(shim("secret", "list", "--store", "nosuch:/x"), mentions="nosuch")


def test_oversize_secret_is_refused(shim: Shim, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (1024 * 1024 + 1))
    assert_bad(shim("secret", "create", "db", "--from-file", f"k={big}"), 2, mentions="1 MiB")
    assert_bad(shim("secret", "create", "db", "--from-stdin", "k", input=b"y" * (1024 * 1024)), 2)
    assert shim.json("secret", "list") == []
    # just under the limit fits: key (1 byte) + value
    big.write_bytes(b"x" * (1024 * 1024 - 1))
    shim.ok("secret", "create", "db", "--from-file", f"k={big}")


def test_create_existing_is_refused_and_keeps_the_old_value(shim: Shim) -> None:
    shim.ok("secret", "create", "db", f"password={PASSWORD}")
    assert_bad(shim("secret", "create", "db", f"password={USERNAME}"), 2, mentions="db")
    assert shim.json("secret", "get", "db", "--reveal")["data"] == {"password": PASSWORD}


def test_corrupt_store_exits_1(shim: Shim, tmp_path: Path) -> None:
    (tmp_path / "store.db").write_bytes(b"this is not a shim store\x00\x01\x02" * 100)
    assert_bad(shim("secret", "list"), 1)
    assert_bad(shim("secret", "create", "db", f"password={PASSWORD}"), 1)
    assert_no_values(b"".join(shim.outputs))


def test_errors_never_echo_values(shim: Shim, tmp_path: Path) -> None:
    shim.ok("secret", "create", "db", f"password={PASSWORD}")
    for args in (
        ["secret", "create", "db", f"password={PASSWORD}"],          # exists
        ["secret", "update", "missing", f"password={PASSWORD}"],     # not found
        ["secret", "create", "db2", f"bad key={PASSWORD}"],          # bad key
        ["secret", "create", "db2", PASSWORD],                       # value without KEY=
        ["secret", "create", f"password={PASSWORD}"],                # value where the name belongs
        ["secret", "get", "db", PASSWORD],                           # stray argument
        ["secret", "get", "db", "--bogus", PASSWORD],
        ["secret", "create", "db2", f"k={PASSWORD}", "k=again"],     # duplicate key
        ["--store", "nosuch:/x", "secret", "create", "db2", f"k={PASSWORD}"],
    ):
        proc = shim(*args)
        assert_bad(proc, 2)
    (tmp_path / "store.db").write_bytes(b"garbage")
    assert_bad(shim("secret", "get", "db"), 1)
    assert_no_values(b"".join(shim.outputs))


def test_store_option_global_and_per_command_override_env(shim: Shim, tmp_path: Path) -> None:
    url = f"embedded:{tmp_path / 'elsewhere.db'}"
    env = {"SHIM_STORE": "nosuch:/x"}
    shim.ok("--store", url, "secret", "create", "db", "k=v", env=env)
    assert [s["name"] for s in shim.json("secret", "list", "--store", url, env=env)] == ["default/default/db"]
    assert [s["name"] for s in shim.json("--store", url, "secret", "list", env=env)] == ["default/default/db"]
    assert shim.json("secret", "list") == []  # SHIM_STORE's store is another one


def test_default_store_lives_under_xdg_data_home(shim: Shim, tmp_path: Path) -> None:
    env = dict(shim.env)
    del env["SHIM_STORE"]
    shim.env = env
    shim.ok("secret", "create", "db", "k=v")
    assert (tmp_path / "data" / "shim").is_dir()
    assert [s["name"] for s in shim.json("secret", "list")] == ["default/default/db"]


def test_json_output_is_sorted_and_stable(shim: Shim) -> None:
    shim.ok("secret", "create", "db", "b=1", "a=2")
    first = shim.ok("secret", "get", "db", "--json", "--reveal").stdout
    second = shim.ok("secret", "get", "db", "--json", "--reveal").stdout
    assert first == second
    assert first.index(b'"binary"') < first.index(b'"data"') < first.index(b'"keys"') < first.index(b'"name"')


# ---------------------------------------------------------------- in-process: the last line of defence


def test_unexpected_exception_prints_type_not_message(monkeypatch, capsys) -> None:
    from shim import cli

    def boom(url=None):
        raise RuntimeError(f"something with {PASSWORD} inside")

    monkeypatch.setattr(cli, "open_store", boom)
    monkeypatch.delenv("SHIM_DEBUG", raising=False)
    assert cli.main(["secret", "list"]) == 1
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
    assert "RuntimeError" in err and "Traceback" not in err and err.count("\n") == 1

    monkeypatch.setenv("SHIM_DEBUG", "1")
    assert cli.main(["secret", "list"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_keyboard_interrupt_is_quiet(monkeypatch, capsys) -> None:
    from shim import cli

    def interrupted(url=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "open_store", interrupted)
    assert cli.main(["secret", "list"]) == 130
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_run_and_demo_are_delegated_with_their_arguments(monkeypatch) -> None:
    import types

    from shim import cli

    seen = {}

    def run_main(argv):
        seen["run"] = argv
        return 0

    def demo_main(argv):
        seen["demo"] = argv
        return 7

    sidecar = types.ModuleType("shim.sidecar")
    sidecar.run_main = run_main
    demo = types.ModuleType("shim.demo")
    demo.main = demo_main
    monkeypatch.setitem(sys.modules, "shim.sidecar", sidecar)
    monkeypatch.setitem(sys.modules, "shim.demo", demo)
    monkeypatch.setenv("SHIM_STORE", "placeholder:")  # restored after the test, whatever main() sets

    assert cli.main(["--store", "embedded:/tmp/x.db", "run", "--port", "9", "--", "cat", "-n"]) == 0
    assert seen["run"] == ["--port", "9", "--", "cat", "-n"]
    assert os.environ["SHIM_STORE"] == "embedded:/tmp/x.db"
    assert cli.main(["demo", "--once"]) == 7
    assert seen["demo"] == ["--once"]


def test_admin_commands_do_not_import_the_sidecar(shim: Shim) -> None:
    code = ("import sys; from shim import cli; "
            "cli.main(['secret', 'list']); "
            "print('shim.sidecar' in sys.modules, 'shim.demo' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, env=shim.env, cwd=shim.tmp, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == b"False False", proc.stderr
