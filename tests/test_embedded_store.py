"""The embedded backend: round trips, sealed isolation, re-keying, tamper and corruption handling, concurrency."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import sqlite3
import stat

import pytest

from shim.errors import AccessDenied, AlreadyExists, BadInput, NotFound, ShimError, StoreError
from shim.names import QualifiedName
from shim.store import embedded, sealing
from shim.store.base import Binding, BoundSecret

KEY = base64.b64encode(bytes(range(32))).decode()
OTHER_KEY = base64.b64encode(bytes(range(1, 33))).decode()
VALUE = b"correct horse battery staple"


def q(text: str) -> QualifiedName:
    return QualifiedName.parse(text)


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("SHIM_MASTER_KEY", KEY)
    monkeypatch.delenv("SHIM_MASTER_KEY_FILE", raising=False)


@pytest.fixture
def path(tmp_path) -> str:
    return str(tmp_path / "data" / "store.db")


@pytest.fixture
def store(path):
    s = embedded.open_store(path)
    yield s
    s.close()


def credential(store, name: str, tmp_path) -> str:
    """Create function ``name`` and write its credential to a file; return the file's path."""
    file = tmp_path / f"{name.replace('/', '_')}.key"
    file.write_bytes(store.create_function(q(name)))
    return str(file)


def raw(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def private_key(credential_path: str) -> bytes:
    return base64.b64decode(json.loads(open(credential_path).read())["private_key"])


def store_id(path: str) -> str:
    return raw(path).execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0]


def sealed_rows(path: str, function: str) -> list[sqlite3.Row]:
    org, ns, name = str(q(function)).split("/")
    return raw(path).execute(
        "SELECT s.org, s.namespace, s.name, s.version, s.ciphertext, b.sealed_dek FROM bindings b "
        "JOIN secrets s ON s.id = b.secret_id JOIN functions f ON f.id = b.function_id "
        "WHERE f.org = ? AND f.namespace = ? AND f.name = ?", (org, ns, name)).fetchall()


def try_unseal(private: bytes, row: sqlite3.Row, sid: str, functions: list[str]) -> list[bytes]:
    """Every DEK ``private`` can get out of ``row``'s sealed blob under any plausible identity."""
    opened = []
    secret = f"{row['org']}/{row['namespace']}/{row['name']}"
    for function in functions:
        for version in range(1, row["version"] + 2):
            aad = sealing.context("sealed-dek", sid, secret, version, q(function))
            try:
                opened.append(sealing.unseal(private, row["sealed_dek"], aad))
            except sealing.OpenFailed:
                pass
    return opened


# ---------------------------------------------------------------------------------------------

def test_round_trip(store, path, tmp_path):
    store.create_secret(q("db"), {"password": VALUE, "user": b"admin"})
    store.create_secret(q("acme/prod/api"), {"token": b"t"})
    store.create_secret(q("acme/dev/api"), {"token": b"d"})
    store.create_secret(q("acme/dev/aaa"), {"k": b"v"})
    assert store.get_secret(q("db")) == {"password": VALUE, "user": b"admin"}
    info = store.describe_secret(q("db"))
    assert (info.name, info.keys, info.version) == (q("db"), ("password", "user"), 1)
    assert [i.name for i in store.list_secrets("acme")] == [q("acme/dev/aaa"), q("acme/dev/api"), q("acme/prod/api")]
    assert [i.name for i in store.list_secrets("acme", "prod")] == [q("acme/prod/api")]
    assert store.list_secrets("nobody") == []

    cred = credential(store, "acme/dev/fn", tmp_path)
    credential(store, "acme/dev/another", tmp_path)
    credential(store, "acme/prod/fn", tmp_path)
    assert store.list_functions("acme") == [q("acme/dev/another"), q("acme/dev/fn"), q("acme/prod/fn")]
    assert store.list_functions("acme", "dev") == [q("acme/dev/another"), q("acme/dev/fn")]
    store.bind(q("acme/dev/api"), q("acme/dev/fn"))
    store.bind(q("acme/dev/aaa"), q("acme/dev/fn"))
    store.bind(q("acme/dev/api"), q("acme/dev/fn"))  # idempotent
    assert store.bindings(q("acme/dev/fn")) == [Binding(q("acme/dev/aaa"), q("acme/dev/fn")),
                                                  Binding(q("acme/dev/api"), q("acme/dev/fn"))]
    assert store.bindings(q("acme/dev/another")) == []

    source = embedded.open_source(path, q("acme/dev/fn"), cred)
    assert source.bound() == [BoundSecret("aaa", "1"), BoundSecret("api", "1")]
    assert source.read(BoundSecret("api", "1")) == {"token": b"d"}
    source.close()


def test_credential_is_the_documented_json_and_not_stored(store, path):
    doc_bytes = store.create_function(q("acme/dev/fn"))
    assert doc_bytes.endswith(b"\n")
    doc = json.loads(doc_bytes)
    assert doc["kind"] == "shim-embedded-function-key" and doc["v"] == 1
    assert doc["function"] == "acme/dev/fn" and doc["store_id"] == store_id(path)
    private = base64.b64decode(doc["private_key"])
    assert len(private) == 32
    stored = raw(path).execute("SELECT public_key FROM functions").fetchone()[0]
    assert stored == sealing.public_of(private)
    assert private not in open(path, "rb").read()


def test_update_makes_new_version_with_new_dek(store, path, tmp_path):
    store.create_secret(q("db"), {"a": b"1"})
    cred = credential(store, "fn", tmp_path)
    store.bind(q("db"), q("fn"))
    before = raw(path).execute("SELECT wrapped_dek, ciphertext FROM secrets").fetchone()
    dek_before = try_unseal(private_key(cred), sealed_rows(path, "fn")[0], store_id(path), ["fn"])
    store.update_secret(q("db"), {"b": b"2", "c": b"3"})
    assert store.get_secret(q("db")) == {"b": b"2", "c": b"3"}
    assert store.describe_secret(q("db")).version == 2
    assert store.describe_secret(q("db")).keys == ("b", "c")
    after = raw(path).execute("SELECT wrapped_dek, ciphertext FROM secrets").fetchone()
    assert before["wrapped_dek"] != after["wrapped_dek"]
    dek_after = try_unseal(private_key(cred), sealed_rows(path, "fn")[0], store_id(path), ["fn"])
    assert len(dek_before) == len(dek_after) == 1 and dek_before != dek_after
    source = embedded.open_source(path, q("fn"), cred)
    assert source.bound() == [BoundSecret("db", "2")]
    assert source.read(BoundSecret("db", "2")) == {"b": b"2", "c": b"3"}


def test_clear_errors_for_names_and_bindings(store, tmp_path):
    store.create_secret(q("acme/dev/db"), {"k": VALUE})
    credential(store, "acme/dev/fn", tmp_path)
    credential(store, "acme/prod/fn", tmp_path)
    with pytest.raises(AlreadyExists, match="secret acme/dev/db already exists") as exc:
        store.create_secret(q("acme/dev/db"), {"k": VALUE})
    assert VALUE.decode() not in str(exc.value)
    with pytest.raises(AlreadyExists, match="function acme/dev/fn already exists"):
        store.create_function(q("acme/dev/fn"))
    with pytest.raises(NotFound, match="secret acme/dev/nope does not exist"):
        store.update_secret(q("acme/dev/nope"), {"k": b"v"})
    with pytest.raises(NotFound):
        store.get_secret(q("acme/dev/nope"))
    with pytest.raises(BadInput, match="same organisation and namespace"):
        store.bind(q("acme/dev/db"), q("acme/prod/fn"))
    with pytest.raises(NotFound, match="function acme/dev/ghost does not exist"):
        store.bind(q("acme/dev/db"), q("acme/dev/ghost"))
    with pytest.raises(NotFound, match="is not bound"):
        store.unbind(q("acme/dev/db"), q("acme/dev/fn"))
    with pytest.raises(BadInput, match="at least one"):
        store.create_secret(q("acme/dev/empty"), {})
    with pytest.raises(BadInput, match="invalid key"):
        store.update_secret(q("acme/dev/db"), {"bad key": VALUE})
    assert store.get_secret(q("acme/dev/db")) == {"k": VALUE}


def test_a_function_credential_opens_only_its_own_secrets(store, path, tmp_path):
    cred_a = credential(store, "fa", tmp_path)
    cred_b = credential(store, "fb", tmp_path)
    for name, fn in [("sa", "fa"), ("sb1", "fb"), ("sb2", "fb")]:
        store.create_secret(q(name), {"k": name.encode()})
        store.bind(q(name), q(fn))
    store.update_secret(q("sb2"), {"k": b"new"})

    source_a = embedded.open_source(path, q("fa"), cred_a)
    assert source_a.bound() == [BoundSecret("sa", "1")]
    assert source_a.read(BoundSecret("sa", "1")) == {"k": b"sa"}
    with pytest.raises(AccessDenied, match="secret default/default/sb1 is not bound to function default/default/fa"):
        source_a.read(BoundSecret("sb1", "1"))

    # A's credential presented as B, or edited to claim B, is refused.
    with pytest.raises(AccessDenied, match=f"the credential at {cred_a} is not function default/default/fb's"):
        embedded.open_source(path, q("fb"), cred_a)
    forged = tmp_path / "forged.key"
    doc = json.loads(open(cred_a).read())
    forged.write_text(json.dumps(dict(doc, function="default/default/fb")))
    with pytest.raises(AccessDenied, match="is not function default/default/fb's"):
        embedded.open_source(path, q("fb"), str(forged))

    # With the whole file in hand, A's private key opens none of B's sealed rows, under any identity.
    rows_b = sealed_rows(path, "fb")
    assert len(rows_b) == 2
    sid = store_id(path)
    for row in rows_b:
        assert try_unseal(private_key(cred_a), row, sid, ["fa", "fb"]) == []
        assert len(try_unseal(private_key(cred_b), row, sid, ["fb"])) == 1


def test_unbind_rekeys_so_the_removed_credential_opens_nothing_new(store, path, tmp_path):
    cred_a = credential(store, "fa", tmp_path)
    cred_b = credential(store, "fb", tmp_path)
    store.create_secret(q("s"), {"k": VALUE})
    store.bind(q("s"), q("fa"))
    store.bind(q("s"), q("fb"))
    sid = store_id(path)
    [old_dek] = try_unseal(private_key(cred_b), sealed_rows(path, "fb")[0], sid, ["fb"])  # B keeps this

    store.unbind(q("s"), q("fb"))
    assert store.describe_secret(q("s")).version == 2
    assert store.bindings() == [Binding(q("s"), q("fa"))]
    assert sealed_rows(path, "fb") == []
    [row_a] = sealed_rows(path, "fa")
    assert row_a["version"] == 2
    assert try_unseal(private_key(cred_b), row_a, sid, ["fa", "fb"]) == []
    with pytest.raises(sealing.OpenFailed):
        sealing.decrypt(old_dek, row_a["ciphertext"], sealing.context("secret-values", sid, "default/default/s", 2))

    source_b = embedded.open_source(path, q("fb"), cred_b)
    assert source_b.bound() == []
    with pytest.raises(AccessDenied, match="secret default/default/s is not bound"):
        source_b.read(BoundSecret("s", "2"))
    assert embedded.open_source(path, q("fa"), cred_a).read(BoundSecret("s", "2")) == {"k": VALUE}


def test_delete_secret_and_function(store, path, tmp_path):
    cred_a = credential(store, "fa", tmp_path)
    credential(store, "fb", tmp_path)
    store.create_secret(q("s1"), {"k": b"1"})
    store.create_secret(q("s2"), {"k": b"2"})
    for s in ("s1", "s2"):
        for f in ("fa", "fb"):
            store.bind(q(s), q(f))
    source_a = embedded.open_source(path, q("fa"), cred_a)
    store.delete_secret(q("s1"))
    assert store.bindings() == [Binding(q("s2"), q("fa")), Binding(q("s2"), q("fb"))]
    with pytest.raises(NotFound, match="secret default/default/s1 no longer exists"):
        source_a.read(BoundSecret("s1", "1"))

    store.delete_function(q("fa"))
    assert store.list_functions("default") == [q("fb")]
    assert store.bindings() == [Binding(q("s2"), q("fb"))]
    assert raw(path).execute("SELECT count(*) FROM functions").fetchone()[0] == 1
    assert store.describe_secret(q("s2")).version == 2  # re-keyed away from the deleted function
    with pytest.raises(AccessDenied, match="function default/default/fa does not exist"):
        source_a.bound()
    store.create_function(q("fa"))  # re-created: the old credential is not the new function's
    with pytest.raises(AccessDenied, match="is not function default/default/fa's"):
        source_a.bound()


def test_rows_moved_between_secrets_fail_clearly(store, path, tmp_path):
    cred = credential(store, "fn", tmp_path)
    cred_other = credential(store, "other", tmp_path)
    store.create_secret(q("a"), {"k": b"aaa"})
    store.create_secret(q("b"), {"k": VALUE})
    for s in ("a", "b"):
        for f in ("fn", "other"):
            store.bind(q(s), q(f))
    db = raw(path)
    db.execute("UPDATE secrets SET ciphertext = (SELECT ciphertext FROM secrets WHERE name = 'b'), "
               "wrapped_dek = (SELECT wrapped_dek FROM secrets WHERE name = 'b') WHERE name = 'a'")
    with pytest.raises(StoreError, match="secret default/default/a .* cannot be decrypted") as exc:
        store.get_secret(q("a"))
    assert VALUE.decode() not in str(exc.value)
    source = embedded.open_source(path, q("fn"), cred)
    with pytest.raises(AccessDenied, match="does not open secret default/default/a"):
        source.read(BoundSecret("a", "1"))
    assert source.read(BoundSecret("b", "1")) == {"k": VALUE}

    # A sealed key moved from one function's binding to another's does not open either.
    db.execute("UPDATE bindings SET sealed_dek = (SELECT sealed_dek FROM bindings b JOIN functions f "
               "ON f.id = b.function_id JOIN secrets s ON s.id = b.secret_id WHERE f.name = 'other' AND "
               "s.name = 'b') WHERE function_id = (SELECT id FROM functions WHERE name = 'fn') "
               "AND secret_id = (SELECT id FROM secrets WHERE name = 'b')")
    with pytest.raises(AccessDenied, match="does not open secret default/default/b"):
        source.read(BoundSecret("b", "1"))
    assert embedded.open_source(path, q("other"), cred_other).read(BoundSecret("b", "1")) == {"k": VALUE}


def test_rows_moved_between_versions_or_store_files_fail(store, path, tmp_path):
    store.create_secret(q("a"), {"k": b"one"})
    db = raw(path)
    version_one = db.execute("SELECT wrapped_dek, ciphertext FROM secrets").fetchone()
    store.update_secret(q("a"), {"k": b"two"})
    db.execute("UPDATE secrets SET wrapped_dek = ?, ciphertext = ?", tuple(version_one))  # roll back rows only
    with pytest.raises(StoreError, match="cannot be decrypted"):
        store.get_secret(q("a"))

    other_path = str(tmp_path / "other.db")
    other = embedded.open_store(other_path)  # same master key, same names, another store id
    other.create_secret(q("a"), {"k": b"other"})
    row = raw(other_path).execute("SELECT version, wrapped_dek, ciphertext FROM secrets").fetchone()
    db.execute("UPDATE secrets SET version = ?, wrapped_dek = ?, ciphertext = ?", tuple(row))
    with pytest.raises(StoreError, match="cannot be decrypted"):
        store.get_secret(q("a"))


@pytest.mark.parametrize("content", [os.urandom(8192), b"hello, I am a text file\n" * 10])
def test_corrupt_file_is_a_clear_store_error(tmp_path, content):
    bad = tmp_path / "bad.db"
    bad.write_bytes(content)
    with pytest.raises(StoreError, match="bad.db is corrupt or not a database"):
        embedded.open_store(str(bad))
    good = embedded.open_store(str(tmp_path / "good.db"))
    cred = credential(good, "fn", tmp_path)
    with pytest.raises(StoreError, match="bad.db is corrupt or not a database"):
        embedded.open_source(str(bad), q("fn"), cred)
    assert bad.read_bytes() == content


def test_foreign_sqlite_file_is_not_a_shim_store(tmp_path):
    foreign = str(tmp_path / "foreign.db")
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE meta (key, value)")
    conn.commit()
    with pytest.raises(StoreError, match="foreign.db is not a shim store"):
        embedded.open_store(foreign)
    good = embedded.open_store(str(tmp_path / "good.db"))
    cred = credential(good, "fn", tmp_path)
    with pytest.raises(StoreError, match="foreign.db is not a shim store"):
        embedded.open_source(foreign, q("fn"), cred)


def test_wrong_master_key_is_refused_at_open(path, monkeypatch):
    embedded.open_store(path).create_secret(q("s"), {"k": VALUE})
    monkeypatch.setenv("SHIM_MASTER_KEY", OTHER_KEY)
    with pytest.raises(StoreError, match="the master key does not open this store"):
        embedded.open_store(path)


@pytest.mark.parametrize("bad", ["not base64 at all!", base64.b64encode(b"x" * 16).decode(), "ab" * 31])
def test_bad_master_key_variable_is_bad_input_without_echo(path, monkeypatch, bad):
    monkeypatch.setenv("SHIM_MASTER_KEY", bad)
    with pytest.raises(BadInput, match="SHIM_MASTER_KEY must be 32 bytes") as exc:
        embedded.open_store(path)
    assert bad not in str(exc.value)


def test_master_key_accepts_hex_and_urlsafe_base64(path, monkeypatch):
    key = bytes([0xFB, 0xFF] * 16)  # encodes with '+' and '/' in standard base64
    monkeypatch.setenv("SHIM_MASTER_KEY", key.hex())
    embedded.open_store(path).create_secret(q("s"), {"k": VALUE})
    monkeypatch.setenv("SHIM_MASTER_KEY", base64.urlsafe_b64encode(key).decode().rstrip("="))
    assert embedded.open_store(path).get_secret(q("s")) == {"k": VALUE}
    monkeypatch.setenv("SHIM_MASTER_KEY", base64.b64encode(key).decode())
    assert embedded.open_store(path).get_secret(q("s")) == {"k": VALUE}


def test_master_key_file_created_private_and_reused(path, tmp_path, monkeypatch):
    monkeypatch.delenv("SHIM_MASTER_KEY")
    key_file = tmp_path / "config" / "shim" / "master.key"
    embedded.open_store(path).create_secret(q("s"), {"k": VALUE})
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert len(base64.b64decode(key_file.read_text())) == 32
    assert embedded.open_store(path).get_secret(q("s")) == {"k": VALUE}
    monkeypatch.setenv("SHIM_MASTER_KEY", key_file.read_text().strip())
    assert embedded.open_store(path).get_secret(q("s")) == {"k": VALUE}

    # An existing store never gets a fresh (useless) key file.
    monkeypatch.delenv("SHIM_MASTER_KEY")
    monkeypatch.setenv("SHIM_MASTER_KEY_FILE", str(tmp_path / "elsewhere.key"))
    with pytest.raises(StoreError, match="no master key"):
        embedded.open_store(path)
    assert not (tmp_path / "elsewhere.key").exists()
    embedded.open_store(str(tmp_path / "new.db"))
    assert stat.S_IMODE((tmp_path / "elsewhere.key").stat().st_mode) == 0o600


def test_source_needs_no_master_key_and_creates_nothing(store, path, tmp_path, monkeypatch):
    cred = credential(store, "fn", tmp_path)
    store.create_secret(q("s"), {"k": VALUE})
    store.bind(q("s"), q("fn"))
    store.close()
    before = open(path, "rb").read()
    monkeypatch.delenv("SHIM_MASTER_KEY")
    monkeypatch.setenv("SHIM_MASTER_KEY_FILE", str(tmp_path / "absent" / "master.key"))

    def no_master_key(**_):
        raise AssertionError("the source read the master key")

    monkeypatch.setattr(embedded, "load_master_key", no_master_key)
    source = embedded.open_source(path, q("fn"), cred)
    assert source.read(source.bound()[0]) == {"k": VALUE}
    assert open(path, "rb").read() == before
    assert not (tmp_path / "absent").exists()
    missing = tmp_path / "nowhere" / "store.db"
    with pytest.raises(StoreError, match="does not exist"):
        embedded.open_source(str(missing), q("fn"), cred)
    assert not missing.parent.exists()


def test_credential_file_problems(store, path, tmp_path):
    with pytest.raises(BadInput, match="cannot read the function credential"):
        embedded.open_source(path, q("fn"), str(tmp_path / "missing.key"))
    junk = tmp_path / "junk.key"
    for content in ("SECRET-LOOKING-CONTENT", '{"kind": "shim-embedded-function-key", "v": 1}',
                    json.dumps({"kind": "shim-embedded-function-key", "v": 1, "function": "default/default/fn",
                                "store_id": "x", "private_key": "SECRET-LOOKING-CONTENT"})):
        junk.write_text(content)
        with pytest.raises(BadInput, match="is not a shim embedded function credential") as exc:
            embedded.open_source(path, q("fn"), str(junk))
        assert "SECRET-LOOKING" not in str(exc.value)
    other = embedded.open_store(str(tmp_path / "other.db"))
    store.create_function(q("fn"))
    with pytest.raises(AccessDenied, match="issued by another store"):
        embedded.open_source(path, q("fn"), credential(other, "fn", tmp_path))


def test_source_rereads_changes_from_another_connection(store, path, tmp_path):
    cred = credential(store, "fn", tmp_path)
    source = embedded.open_source(path, q("fn"), cred)
    assert source.bound() == []
    admin = embedded.open_store(path)  # a second connection, as another process would have
    admin.create_secret(q("s"), {"k": b"1"})
    admin.bind(q("s"), q("fn"))
    assert source.bound() == [BoundSecret("s", "1")]
    assert source.read(BoundSecret("s", "1")) == {"k": b"1"}
    admin.update_secret(q("s"), {"k": b"2"})
    assert source.bound() == [BoundSecret("s", "2")]
    assert source.read(BoundSecret("s", "1")) == {"k": b"2"}
    admin.delete_secret(q("s"))
    assert source.bound() == []


def test_failed_write_loses_nothing(store, path, tmp_path, monkeypatch):
    cred_a = credential(store, "fa", tmp_path)
    credential(store, "fb", tmp_path)
    store.create_secret(q("s"), {"k": VALUE})
    store.bind(q("s"), q("fa"))
    store.bind(q("s"), q("fb"))
    before = open(path, "rb").read()

    def failing_seal(*args):
        raise RuntimeError("injected failure")

    real_seal = sealing.seal
    monkeypatch.setattr(sealing, "seal", failing_seal)  # fails after the secret row was rewritten
    with pytest.raises(RuntimeError, match="injected"):
        store.unbind(q("s"), q("fb"))
    with pytest.raises(RuntimeError, match="injected"):
        store.update_secret(q("s"), {"k": b"lost"})
    with pytest.raises(RuntimeError, match="injected"):
        store.delete_function(q("fb"))
    monkeypatch.setattr(sealing, "seal", real_seal)

    assert open(path, "rb").read() == before
    assert store.describe_secret(q("s")).version == 1
    assert store.get_secret(q("s")) == {"k": VALUE}
    assert store.bindings() == [Binding(q("s"), q("fa")), Binding(q("s"), q("fb"))]
    assert embedded.open_source(path, q("fa"), cred_a).read(BoundSecret("s", "1")) == {"k": VALUE}
    store.update_secret(q("s"), {"k": b"after"})  # the connection is usable again
    assert store.get_secret(q("s")) == {"k": b"after"}


def _writer(path: str, worker: int) -> None:
    store = embedded.open_store(path)
    for i in range(20):
        store.create_secret(q(f"w{worker}-s{i}"), {"k": f"{worker}-{i}".encode()})
        store.update_secret(q("shared"), {"k": f"{worker}-{i}".encode()})
    store.close()


def test_concurrent_writers_from_several_processes(store, path, tmp_path):
    store.create_secret(q("shared"), {"k": b"start"})
    cred = credential(store, "fn", tmp_path)
    store.bind(q("shared"), q("fn"))
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_writer, args=(path, w)) for w in range(4)]
    for p in workers:
        p.start()
    source = embedded.open_source(path, q("fn"), cred)
    while any(p.is_alive() for p in workers):  # the sidecar reads while admins write
        assert set(source.read(BoundSecret("shared", "1"))) == {"k"}
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    infos = store.list_secrets("default")
    assert len(infos) == 81
    assert store.describe_secret(q("shared")).version == 81
    for w in range(4):
        for i in range(20):
            assert store.get_secret(q(f"w{w}-s{i}")) == {"k": f"{w}-{i}".encode()}
    assert source.bound() == [BoundSecret("shared", "81")]


def test_values_serialisation_is_deterministic():
    a = sealing.encode_values({"b": b"\x00\xff", "a": b"x"})
    assert a == sealing.encode_values({"a": b"x", "b": b"\x00\xff"})
    assert a == b'{"a":"eA==","b":"AP8="}'
    assert sealing.decode_values(a) == {"a": b"x", "b": b"\x00\xff"}


def test_errors_are_shim_errors_without_values(store, path, tmp_path):
    store.create_secret(q("s"), {"k": VALUE})
    raw(path).execute("UPDATE secrets SET ciphertext = x'00'")
    with pytest.raises(ShimError) as exc:
        store.get_secret(q("s"))
    assert VALUE.decode() not in str(exc.value) and "sqlite" not in str(exc.value).lower()
