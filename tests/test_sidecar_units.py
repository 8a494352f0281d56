"""The sidecar's pure parts: configuration, the cache's staleness bound, snapshots, log redaction.

The cache tests read from a real embedded store file; only the clock is ours, so the staleness bound is
checked exactly rather than with sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os

import pytest

from shim import config
from shim.errors import BadInput, SecretUnavailable
from shim.log import Redactor, configure, get_logger, redactor
from shim.names import QualifiedName, env_name
from shim.sidecar.cache import SecretCache, Snapshot
from shim.store import open_source, open_store

BASE = {"SHIM_FUNCTION": "fn", "SHIM_FUNCTION_KEY": "/k"}


# -- configuration ------------------------------------------------------------------------------

def test_defaults_follow_the_watchdog():
    c = config.load([], BASE)
    assert (c.mode, c.inject, c.port, c.exec_timeout, c.write_timeout) == ("http", "params", 8080, 30.0, 30.0)
    assert c.healthcheck_interval == c.write_timeout
    assert c.function == QualifiedName("default", "default", "fn")
    assert c.cache_ttl == 5.0


@pytest.mark.parametrize("text, seconds", [("30", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("0", 0.0), ("1h", 3600.0)])
def test_durations_are_seconds_or_go_durations(text, seconds):
    assert config.parse_duration(text, "x") == seconds


@pytest.mark.parametrize("text", ["", "abc", "10 s", "5x", "1m30"])
def test_bad_durations_say_what_is_wrong(text):
    with pytest.raises(BadInput, match="invalid x"):
        config.parse_duration(text, "x")


def test_fork_modes_default_to_env_and_need_a_command():
    c = config.load([], {**BASE, "mode": "serializing", "fprocess": "python3  handler.py"})
    assert (c.inject, c.fprocess) == ("env", ("python3", "handler.py"))
    with pytest.raises(BadInput, match="needs a command"):
        config.load([], {**BASE, "mode": "streaming"})


def test_function_process_wins_over_fprocess_and_flags_over_env():
    c = config.load(["--port", "9000", "--", "node", "x.js"], {**BASE, "port": "7000", "fprocess": "a", "function_process": "b"})
    assert c.port == 9000 and c.fprocess == ("node", "x.js")
    c = config.load([], {**BASE, "fprocess": "a", "function_process": "b c"})
    assert c.fprocess == ("b", "c")


@pytest.mark.parametrize("env, message", [
    ({"SHIM_FUNCTION_KEY": "/k"}, "which function"),
    ({"SHIM_FUNCTION": "fn"}, "no function credential"),
    ({**BASE, "SHIM_FUNCTION": "Bad_Name"}, "invalid name"),
    ({**BASE, "mode": "afterburn"}, "unknown mode"),
    ({**BASE, "SHIM_INJECT": "env"}, "needs a process per invocation"),
    ({**BASE, "mode": "serializing", "fprocess": "x", "SHIM_INJECT": "params"}, "needs a long-running"),
    ({**BASE, "write_timeout": "0"}, "must be over 0s"),
    ({**BASE, "port": "http"}, "whole number"),
    ({**BASE, "upstream_url": "https://x:1"}, "invalid upstream_url"),
])
def test_bad_configuration_is_one_clear_error(env, message):
    with pytest.raises(BadInput, match=message):
        config.load([], env)


# -- snapshots ------------------------------------------------------------------------------------

def test_snapshot_block_and_environment():
    snap = Snapshot("o/n/f", {"db": {"user": b"app", "der": b"\xff\x00"}, "api-key": {"token.v1": b"t"}}, {}, 0.0)
    block = json.loads(snap.params_block())
    assert block == {"v": 1, "function": "o/n/f", "secrets": {"db": {"user": "app"}, "api-key": {"token.v1": "t"}},
                     "binary": {"db": {"der": base64.b64encode(b"\xff\x00").decode()}}}
    with pytest.raises(BadInput, match="NUL byte"):
        snap.environment()
    snap = Snapshot("o/n/f", {"db": {"user": b"app"}, "api-key": {"token.v1": b"t"}}, {}, 0.0)
    assert snap.environment() == {"SECRET_DB_USER": "app", "SECRET_API_KEY_TOKEN_V1": "t"}
    assert "app" not in repr(snap)


def test_two_keys_mapping_to_one_variable_are_refused():
    assert env_name("a-b", "c") == env_name("a", "b_c") == "SECRET_A_B_C"
    snap = Snapshot("f", {"a-b": {"c": b"1"}, "a": {"b_c": b"2"}}, {}, 0.0)
    with pytest.raises(BadInput, match="SECRET_A_B_C"):
        snap.environment()


# -- the cache against a real store file ----------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingSource:
    """The real embedded source, with its reads counted."""

    def __init__(self, source) -> None:
        self.source, self.function, self.reads, self.lists = source, source.function, 0, 0

    def bound(self):
        self.lists += 1
        return self.source.bound()

    def read(self, secret):
        self.reads += 1
        return self.source.read(secret)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("SHIM_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    url = f"embedded:{tmp_path / 'store.db'}"
    admin = open_store(url)
    fn = QualifiedName.parse("fn")
    (tmp_path / "fn.key").write_bytes(admin.create_function(fn))
    admin.create_secret(QualifiedName.parse("db"), {"password": b"v1"})
    admin.bind(QualifiedName.parse("db"), fn)
    source = CountingSource(open_source(url, fn, str(tmp_path / "fn.key")))
    return admin, source


def test_cache_reuses_within_the_bound_and_refreshes_after(store):
    admin, source = store
    clock = Clock()
    cache = SecretCache(source, max_age=5.0, clock=clock)

    async def scenario():
        first = await cache.get()
        assert first.secrets == {"db": {"password": b"v1"}}
        clock.now += 4.9
        assert cache.fresh() is first and (await cache.get()) is first
        admin.update_secret(QualifiedName.parse("db"), {"password": b"v2"})
        clock.now += 0.2  # 5.1 s after the refresh started: too old
        assert cache.fresh() is None
        second = await cache.get()
        assert second.secrets == {"db": {"password": b"v2"}}
        clock.now += 6
        third = await cache.get()  # nothing changed: bindings listed again, values not re-read
        assert third.secrets == second.secrets
        return source.lists, source.reads

    assert asyncio.run(scenario()) == (3, 2)


def test_zero_ttl_fetches_for_every_invocation(store):
    admin, source = store
    cache = SecretCache(source, max_age=0.0, clock=Clock())

    async def scenario():
        await cache.get()
        await cache.get()
        assert cache.fresh() is None

    asyncio.run(scenario())
    assert source.lists == 2


def test_concurrent_invocations_share_one_refresh(store):
    _, source = store
    cache = SecretCache(source, max_age=5.0, clock=Clock())

    async def scenario():
        return await asyncio.gather(*(cache.get() for _ in range(20)))

    snapshots = asyncio.run(scenario())
    assert len({id(s) for s in snapshots}) == 1 and source.lists == 1


def test_unbinding_drops_the_secret_at_the_next_refresh(store):
    admin, source = store
    clock = Clock()
    seen: list = []
    cache = SecretCache(source, max_age=1.0, clock=clock, on_change=seen.append)

    async def scenario():
        assert (await cache.get()).names == ["db"]
        admin.unbind(QualifiedName.parse("db"), QualifiedName.parse("fn"))
        clock.now += 1.0
        return await cache.get()

    assert asyncio.run(scenario()).secrets == {}
    assert seen[-1].secrets == {}


def test_a_broken_store_fails_closed_and_drops_what_was_held(store, tmp_path):
    admin, source = store
    clock = Clock()
    seen: list = []
    cache = SecretCache(source, max_age=1.0, clock=clock, on_change=seen.append)

    async def scenario():
        await cache.get()
        admin.close()
        (tmp_path / "store.db").write_bytes(os.urandom(4096))
        clock.now += 2
        with pytest.raises(SecretUnavailable) as info:
            await cache.get()
        return info.value

    error = asyncio.run(scenario())
    assert "v1" not in str(error)
    assert error.secret == "db"  # the secret at stake, known from the store's last answer
    assert seen[-1] is None and cache.fresh() is None


def test_a_deleted_secret_is_named_in_the_error(store):
    admin, source = store

    class Racing(CountingSource):
        def bound(self):  # the binding is listed, then the secret disappears before the read
            listed = super().bound()
            admin.delete_secret(QualifiedName.parse("db"))
            return listed

    cache = SecretCache(Racing(source.source), max_age=1.0, clock=Clock())
    with pytest.raises(SecretUnavailable) as info:
        asyncio.run(cache.get())
    assert info.value.secret == "db"


# -- log redaction --------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [b"hunter22", b'quo"te\\back\nnl', "caf\u00e9-\u2603".encode(), b"\xff\xfe\x00raw"])
def test_no_form_of_a_value_survives_a_log_line(value):
    stream = io.StringIO()
    configure("json", stream)
    redactor.set_values([value])
    try:
        log = get_logger()
        text = value.decode("utf-8", "backslashreplace")
        log.info("fields", as_text=text, as_bytes=value, nested={"list": [text]}, message=f"got {text!r}")
        try:
            raise RuntimeError(f"failed with {text} and {value!r}")
        except RuntimeError:
            log.exception("boom")
    finally:
        redactor.clear()
    out = stream.getvalue()
    assert out.count("[REDACTED]") >= 6
    for line in out.splitlines():
        decoded = json.dumps(json.loads(line))
        for form in (text, repr(value)[2:-1], json.dumps(text)[1:-1]):
            assert form not in line and form not in decoded


def test_redactor_prefers_the_longest_value():
    r = Redactor()
    r.set_values([b"abc", b"abcdef"])
    assert r.text("x abcdef y abc") == "x [REDACTED] y [REDACTED]"
    r.clear()
    assert r.text("abc") == "abc"


def test_a_change_notice_ends_freshness_but_keeps_values_for_reuse(store):
    _, source = store
    cache = SecretCache(source, max_age=60.0, clock=Clock())

    async def scenario():
        first = await cache.get()
        cache.invalidate()
        assert cache.fresh() is None
        second = await cache.get()
        return first, second

    first, second = asyncio.run(scenario())
    assert second is not first and second.secrets == first.secrets
    assert (source.lists, source.reads) == (2, 1)  # listed again, unchanged version not re-read


def test_an_event_keeps_the_time_it_happened_at():
    stream = io.StringIO()
    configure("json", stream)
    get_logger().info("invocation", timestamp=1767225600.25)  # 2026-01-01T00:00:00.25Z
    get_logger().info("now")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["timestamp"] == "2026-01-01T00:00:00.250000Z"
    assert second["timestamp"] > "2026-12"  # stamped when logged
