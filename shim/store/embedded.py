"""The embedded backend: one SQLite file of encrypted secrets, function public keys and sealed bindings.

Each secret version has a random data key (DEK). The values are encrypted under the DEK; the DEK is
wrapped under the administrator's master key (so the admin can read and rewrite the secret) and
sealed to the X25519 public key of every bound function (so that function's sidecar, and no one
else, can read it). Associated data names store, secret, version and function, so moved rows fail to
open. The sidecar opens the file read-only and never needs the master key.

Schema (format 1; ``PRAGMA application_id`` = 0x5348494D, "SHIM"; default rollback journal)::

    meta(key TEXT PRIMARY KEY, value)       -- format, store_id (random hex), key_check
    secrets(id, org, namespace, name, version, keys, wrapped_dek, ciphertext)
    functions(id, org, namespace, name, public_key)
    bindings(secret_id, function_id, sealed_dek)

``keys`` (a JSON list of key names) is plaintext so that describe/list need no decryption.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets as random
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import AccessDenied, AlreadyExists, BadInput, NotFound, StoreError
from ..names import QualifiedName, check_label, check_secret_data
from . import sealing
from .base import Binding, BoundSecret, SecretInfo, SecretSource, SecretStore

APPLICATION_ID = 0x5348494D  # "SHIM"
FORMAT = 1
BUSY_TIMEOUT = 10.0  # seconds a writer or reader waits for another process's lock
CREDENTIAL_KIND = "shim-embedded-function-key"
_KEY_CHECK = b"shim master key check"

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value NOT NULL)",
    """CREATE TABLE secrets (id INTEGER PRIMARY KEY, org TEXT NOT NULL, namespace TEXT NOT NULL,
        name TEXT NOT NULL, version INTEGER NOT NULL, keys TEXT NOT NULL, wrapped_dek BLOB NOT NULL,
        ciphertext BLOB NOT NULL, UNIQUE (org, namespace, name))""",
    """CREATE TABLE functions (id INTEGER PRIMARY KEY, org TEXT NOT NULL, namespace TEXT NOT NULL,
        name TEXT NOT NULL, public_key BLOB NOT NULL, UNIQUE (org, namespace, name))""",
    """CREATE TABLE bindings (secret_id INTEGER NOT NULL REFERENCES secrets (id),
        function_id INTEGER NOT NULL REFERENCES functions (id), sealed_dek BLOB NOT NULL,
        PRIMARY KEY (secret_id, function_id))""",
)


# ---------------------------------------------------------------------------------------------
# The master key (administrator side only)

def master_key_path() -> Path:
    """``$SHIM_MASTER_KEY_FILE``, else ``$XDG_CONFIG_HOME/shim/master.key`` (``~/.config/shim/master.key``)."""
    explicit = os.environ.get("SHIM_MASTER_KEY_FILE")
    if explicit:
        return Path(explicit)
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "shim" / "master.key"


def decode_master_key(text: str, source: str) -> bytes:
    """32 bytes from hex or (standard or URL-safe) base64; the message never repeats the text."""
    text = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    try:
        standard = text.replace("-", "+").replace("_", "/")
        key = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != sealing.KEY_BYTES:
        raise BadInput(f"{source} must be 32 bytes in base64 or hex (64 hex digits); "
                       "make one with: head -c 32 /dev/urandom | base64")
    return key


def load_master_key(*, create: bool) -> bytes:
    """The key from SHIM_MASTER_KEY, else the key file; ``create`` makes the file for a new store."""
    if os.environ.get("SHIM_MASTER_KEY"):
        return decode_master_key(os.environ["SHIM_MASTER_KEY"], "SHIM_MASTER_KEY")
    path = master_key_path()
    try:
        return decode_master_key(path.read_text(), f"the master key file {path}")
    except FileNotFoundError:
        if not create:
            raise StoreError(f"no master key: set SHIM_MASTER_KEY or restore {path}") from None
    except OSError as exc:
        raise StoreError(f"cannot read the master key file {path}: {exc.strerror}") from None
    return _create_key_file(path)


def _create_key_file(path: Path) -> bytes:
    """Write a new key to a private (0600, O_EXCL) temporary file, then link it into place.

    The link is atomic and refuses to overwrite, so concurrent creators agree on one whole key.
    """
    key = os.urandom(sealing.KEY_BYTES)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{random.token_hex(4)}")
    try:
        make_private_dirs(path.parent)
        fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(base64.b64encode(key).decode("ascii") + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, path)
    except FileExistsError:
        return decode_master_key(path.read_text(), f"the master key file {path}")
    except OSError as exc:
        raise StoreError(f"cannot create the master key file {path}: {exc.strerror}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return key


def make_private_dirs(directory: Path) -> None:
    """Create each missing directory with mode 0700 (``os.makedirs`` gives the mode to the last only)."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for each in reversed(missing):
        try:
            os.mkdir(each, 0o700)
        except FileExistsError:
            pass


# ---------------------------------------------------------------------------------------------
# The file

class _Db:
    """One SQLite connection: explicit transactions, a lock for threads, sqlite errors made readable."""

    def __init__(self, path: str, *, readonly: bool) -> None:
        self.path = path
        self._lock = threading.RLock()
        target = Path(path).absolute().as_uri() + "?mode=ro" if readonly else path
        with self.errors():
            self.conn = sqlite3.connect(target, uri=readonly, timeout=BUSY_TIMEOUT, isolation_level=None,
                                        check_same_thread=False)
        self.conn.row_factory = sqlite3.Row

    @contextmanager
    def errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.ProgrammingError:
            raise
        except sqlite3.DatabaseError as exc:
            raise self._translate(str(exc)) from None

    def _translate(self, text: str) -> StoreError:
        if "not a database" in text or "malformed" in text:
            return StoreError(f"{self.path} is corrupt or not a database")
        if "locked" in text or "busy" in text:
            return StoreError(f"the store {self.path} stayed locked by another process for {BUSY_TIMEOUT:g} s")
        if "no such table" in text:
            return StoreError(f"{self.path} is not a shim store (tables are missing)")
        if "unable to open" in text:
            return StoreError(f"cannot open the store {self.path}")
        return StoreError(f"the store {self.path} failed: {text}")

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for reads; ``BEGIN IMMEDIATE`` for writes so writers queue, never deadlock."""
        with self._lock, self.errors():
            self.conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self.conn
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def _is_blank(conn: sqlite3.Connection) -> bool:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    return app_id == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def _initialise(conn: sqlite3.Connection, master_key: bytes) -> None:
    store_id = random.token_hex(16)
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    key_check = sealing.encrypt(master_key, _KEY_CHECK, sealing.context("key-check", store_id))
    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                     [("format", FORMAT), ("store_id", store_id), ("key_check", key_check)])


def _read_meta(db: _Db) -> tuple[str, bytes]:
    """The store id and key check, refusing foreign SQLite files and other formats first."""
    with db.transaction(write=False) as conn:
        if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            raise StoreError(f"{db.path} is not a shim store (it is a SQLite database of something else)")
        meta = {row["key"]: row["value"] for row in conn.execute("SELECT key, value FROM meta")}
    version = meta.get("format")
    if isinstance(version, int) and version > FORMAT:
        raise StoreError(f"{db.path} has store format {version}; this shim reads format {FORMAT}, upgrade it")
    if version != FORMAT or not isinstance(meta.get("store_id"), str) or not isinstance(meta.get("key_check"), bytes):
        raise StoreError(f"{db.path} is not a shim store (its meta table is incomplete)")
    return meta["store_id"], meta["key_check"]


def _store_path(location: str) -> str:
    if not location:
        raise BadInput("the embedded store needs a file path, e.g. embedded:/var/lib/shim/store.db")
    return os.path.expanduser(location)


def _create_file(path: str) -> None:
    """The admin creates the store file (0600) and its directories (0700); the sidecar never does."""
    make_private_dirs(Path(path).parent)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot create the store {path}: {exc.strerror}") from None


def _scope_filter(org: str, namespace: str | None) -> tuple[str, tuple[str, ...]]:
    check_label(org, "organisation")
    if namespace is None:
        return "org = ?", (org,)
    return "org = ? AND namespace = ?", (org, check_label(namespace, "namespace"))


def _qualified(row: sqlite3.Row) -> QualifiedName:
    return QualifiedName(row["org"], row["namespace"], row["name"])


def _find(conn: sqlite3.Connection, table: str, name: QualifiedName) -> sqlite3.Row | None:
    """The ``secrets`` or ``functions`` row of ``name``, if any."""
    return conn.execute(f"SELECT * FROM {table} WHERE org = ? AND namespace = ? AND name = ?",
                        (name.org, name.namespace, name.name)).fetchone()


def _get(conn: sqlite3.Connection, table: str, name: QualifiedName) -> sqlite3.Row:
    row = _find(conn, table, name)
    if row is None:
        raise NotFound(f"{table[:-1]} {name} does not exist")
    return row


# ---------------------------------------------------------------------------------------------
# The administrator's store

def open_store(location: str) -> SecretStore:
    """Open (creating on first use) the store file and check the master key opens it."""
    path = _store_path(location)
    if not os.path.exists(path):
        _create_file(path)
    db = _Db(path, readonly=False)
    try:
        with db.errors():
            db.conn.execute("PRAGMA secure_delete = ON")  # old keys and ciphertexts do not linger in free pages
        with db.transaction(write=False) as conn:
            blank = _is_blank(conn)
        if blank:
            with db.transaction(write=True) as conn:
                if _is_blank(conn):
                    _initialise(conn, load_master_key(create=True))
        store_id, key_check = _read_meta(db)
        master_key = load_master_key(create=False)
        try:
            sealing.decrypt(master_key, key_check, sealing.context("key-check", store_id))
        except sealing.OpenFailed:
            raise StoreError(f"the master key does not open this store {path} "
                             "(check SHIM_MASTER_KEY or the master key file)") from None
    except BaseException:
        db.close()
        raise
    return EmbeddedStore(db, store_id, master_key)


class EmbeddedStore(SecretStore):
    def __init__(self, db: _Db, store_id: str, master_key: bytes) -> None:
        self._db = db
        self._store_id = store_id
        self._master_key = master_key

    # -- secrets --

    def create_secret(self, name: QualifiedName, data: dict[str, bytes]) -> None:
        data = check_secret_data(data)
        with self._db.transaction(write=True) as conn:
            if _find(conn, "secrets", name) is not None:
                raise AlreadyExists(f"secret {name} already exists")
            cursor = conn.execute(
                "INSERT INTO secrets (org, namespace, name, version, keys, wrapped_dek, ciphertext) "
                "VALUES (?, ?, ?, 0, '[]', x'', x'')", (name.org, name.namespace, name.name))
            self._write_version(conn, cursor.lastrowid, name, 1, data)

    def update_secret(self, name: QualifiedName, data: dict[str, bytes]) -> None:
        data = check_secret_data(data)
        with self._db.transaction(write=True) as conn:
            row = _get(conn, "secrets", name)
            self._write_version(conn, row["id"], name, row["version"] + 1, data)

    def get_secret(self, name: QualifiedName) -> dict[str, bytes]:
        with self._db.transaction(write=False) as conn:
            row = _get(conn, "secrets", name)
        return self._open_values(name, row, self._open_dek(name, row))

    def describe_secret(self, name: QualifiedName) -> SecretInfo:
        with self._db.transaction(write=False) as conn:
            return self._info(_get(conn, "secrets", name))

    def list_secrets(self, org: str, namespace: str | None = None) -> list[SecretInfo]:
        where, args = _scope_filter(org, namespace)
        with self._db.transaction(write=False) as conn:
            rows = conn.execute(f"SELECT * FROM secrets WHERE {where} ORDER BY org, namespace, name", args)
            return [self._info(row) for row in rows]

    def delete_secret(self, name: QualifiedName) -> None:
        with self._db.transaction(write=True) as conn:
            row = _get(conn, "secrets", name)
            conn.execute("DELETE FROM bindings WHERE secret_id = ?", (row["id"],))
            conn.execute("DELETE FROM secrets WHERE id = ?", (row["id"],))

    # -- functions --

    def create_function(self, name: QualifiedName) -> bytes:
        private_key, public_key = sealing.new_identity()
        with self._db.transaction(write=True) as conn:
            if _find(conn, "functions", name) is not None:
                raise AlreadyExists(f"function {name} already exists")
            conn.execute("INSERT INTO functions (org, namespace, name, public_key) VALUES (?, ?, ?, ?)",
                         (name.org, name.namespace, name.name, public_key))
        credential = {"kind": CREDENTIAL_KIND, "v": 1, "function": str(name), "store_id": self._store_id,
                      "private_key": base64.b64encode(private_key).decode("ascii")}
        return (json.dumps(credential) + "\n").encode("ascii")

    def delete_function(self, name: QualifiedName) -> None:
        """Remove the function and re-key its secrets, so a kept credential opens nothing new."""
        with self._db.transaction(write=True) as conn:
            function = _get(conn, "functions", name)
            secrets = conn.execute("SELECT s.* FROM bindings b JOIN secrets s ON s.id = b.secret_id "
                                   "WHERE b.function_id = ?", (function["id"],)).fetchall()
            conn.execute("DELETE FROM bindings WHERE function_id = ?", (function["id"],))
            conn.execute("DELETE FROM functions WHERE id = ?", (function["id"],))
            for row in secrets:
                self._rekey(conn, _qualified(row), row)

    def list_functions(self, org: str, namespace: str | None = None) -> list[QualifiedName]:
        where, args = _scope_filter(org, namespace)
        with self._db.transaction(write=False) as conn:
            rows = conn.execute(f"SELECT org, namespace, name FROM functions WHERE {where} "
                                "ORDER BY org, namespace, name", args)
            return [_qualified(row) for row in rows]

    # -- bindings --

    def bind(self, secret: QualifiedName, function: QualifiedName) -> None:
        """Seal the secret's current DEK to the function; binding twice changes nothing."""
        if secret.scope != function.scope:
            raise BadInput(f"cannot bind secret {secret} to function {function}: "
                           "secrets bind only to functions of the same organisation and namespace")
        with self._db.transaction(write=True) as conn:
            row = _get(conn, "secrets", secret)
            target = _get(conn, "functions", function)
            if conn.execute("SELECT 1 FROM bindings WHERE secret_id = ? AND function_id = ?",
                            (row["id"], target["id"])).fetchone():
                return
            sealed = self._seal(self._open_dek(secret, row), secret, row["version"], function, target["public_key"])
            conn.execute("INSERT INTO bindings (secret_id, function_id, sealed_dek) VALUES (?, ?, ?)",
                         (row["id"], target["id"], sealed))

    def unbind(self, secret: QualifiedName, function: QualifiedName) -> None:
        """Drop the binding and re-key, so the function's credential cannot open the new version."""
        with self._db.transaction(write=True) as conn:
            row = _get(conn, "secrets", secret)
            target = _get(conn, "functions", function)
            deleted = conn.execute("DELETE FROM bindings WHERE secret_id = ? AND function_id = ?",
                                   (row["id"], target["id"]))
            if deleted.rowcount == 0:
                raise NotFound(f"secret {secret} is not bound to function {function}")
            self._rekey(conn, secret, row)

    def bindings(self, function: QualifiedName | None = None) -> list[Binding]:
        query = ("SELECT s.org AS s_org, s.namespace AS s_ns, s.name AS s_name, f.org, f.namespace, f.name "
                 "FROM bindings b JOIN secrets s ON s.id = b.secret_id JOIN functions f ON f.id = b.function_id")
        args: tuple[str, ...] = ()
        if function is not None:
            query += " WHERE f.org = ? AND f.namespace = ? AND f.name = ?"
            args = (function.org, function.namespace, function.name)
        with self._db.transaction(write=False) as conn:
            rows = conn.execute(query, args).fetchall()
        return sorted(Binding(QualifiedName(r["s_org"], r["s_ns"], r["s_name"]), _qualified(r)) for r in rows)

    def close(self) -> None:
        self._db.close()

    # -- helpers --

    def _write_version(self, conn: sqlite3.Connection, secret_id: int, name: QualifiedName, version: int,
                       data: dict[str, bytes]) -> None:
        """Store ``data`` as ``version`` under a fresh DEK and re-seal that DEK for every bound function."""
        dek = sealing.new_key()
        wrapped = sealing.encrypt(self._master_key, dek, self._aad("admin-dek", name, version))
        ciphertext = sealing.encrypt(dek, sealing.encode_values(data), self._aad("secret-values", name, version))
        conn.execute("UPDATE secrets SET version = ?, keys = ?, wrapped_dek = ?, ciphertext = ? WHERE id = ?",
                     (version, json.dumps(sorted(data)), wrapped, ciphertext, secret_id))
        bound = conn.execute("SELECT f.* FROM bindings b JOIN functions f ON f.id = b.function_id "
                             "WHERE b.secret_id = ?", (secret_id,)).fetchall()
        for function in bound:
            sealed = self._seal(dek, name, version, _qualified(function), function["public_key"])
            conn.execute("UPDATE bindings SET sealed_dek = ? WHERE secret_id = ? AND function_id = ?",
                         (sealed, secret_id, function["id"]))

    def _rekey(self, conn: sqlite3.Connection, name: QualifiedName, row: sqlite3.Row) -> None:
        data = self._open_values(name, row, self._open_dek(name, row))
        self._write_version(conn, row["id"], name, row["version"] + 1, data)

    def _seal(self, dek: bytes, secret: QualifiedName, version: int, function: QualifiedName,
              public_key: bytes) -> bytes:
        return sealing.seal(public_key, dek, self._aad("sealed-dek", secret, version, function))

    def _open_dek(self, name: QualifiedName, row: sqlite3.Row) -> bytes:
        try:
            return sealing.decrypt(self._master_key, row["wrapped_dek"], self._aad("admin-dek", name, row["version"]))
        except sealing.OpenFailed:
            raise self._undecryptable(name) from None

    def _open_values(self, name: QualifiedName, row: sqlite3.Row, dek: bytes) -> dict[str, bytes]:
        try:
            return sealing.decode_values(
                sealing.decrypt(dek, row["ciphertext"], self._aad("secret-values", name, row["version"])))
        except sealing.OpenFailed:
            raise self._undecryptable(name) from None

    def _undecryptable(self, name: QualifiedName) -> StoreError:
        return StoreError(f"secret {name} in {self._db.path} cannot be decrypted: its rows were altered "
                          "or moved from another secret, version or store")

    def _aad(self, kind: str, *parts: object) -> bytes:
        return sealing.context(kind, self._store_id, *parts)

    @staticmethod
    def _info(row: sqlite3.Row) -> SecretInfo:
        return SecretInfo(_qualified(row), tuple(json.loads(row["keys"])), row["version"])


# ---------------------------------------------------------------------------------------------
# The sidecar's source

@dataclass(frozen=True, repr=False)
class _Credential:
    function: str
    store_id: str
    private_key: bytes
    public_key: bytes


def _read_credential(path: str) -> _Credential:
    """Parse a function credential; messages name the file but never repeat its content."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read the function credential {path}: {exc.strerror or type(exc).__name__}") from None
    malformed = BadInput(f"{path} is not a shim embedded function credential (as written by creating a function)")
    try:
        doc = json.loads(raw)
        if doc.get("kind") != CREDENTIAL_KIND or doc.get("v") != 1:
            raise malformed
        function, store_id = doc["function"], doc["store_id"]
        private_key = base64.b64decode(doc["private_key"], validate=True)
        public_key = sealing.public_of(private_key)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise malformed from None
    if not isinstance(function, str) or not isinstance(store_id, str):
        raise malformed
    return _Credential(function, store_id, private_key, public_key)


def open_source(location: str, function: QualifiedName, credential_path: str) -> SecretSource:
    """Open the store read-only as ``function``; the credential must be that function's, from this store."""
    credential = _read_credential(credential_path)
    path = _store_path(location)
    if not os.path.exists(path):
        raise StoreError(f"the store {path} does not exist")
    db = _Db(path, readonly=True)
    try:
        store_id, _ = _read_meta(db)
        if credential.function != str(function):
            raise AccessDenied(f"the credential at {credential_path} is not function {function}'s")
        if credential.store_id != store_id:
            raise AccessDenied(f"the credential at {credential_path} was issued by another store, not {path}")
        source = EmbeddedSource(db, function, credential, credential_path)
        source.bound()  # checks the public key now, so a wrong credential fails at start-up
    except BaseException:
        db.close()
        raise
    return source


class EmbeddedSource(SecretSource):
    """Reads the file afresh on every call (admins write it from other processes)."""

    def __init__(self, db: _Db, function: QualifiedName, credential: _Credential, credential_path: str) -> None:
        self.function = function
        self._db = db
        self._credential: _Credential | None = credential
        self._credential_path = credential_path

    def bound(self) -> list[BoundSecret]:
        with self._db.transaction(write=False) as conn:
            function_id = self._function_id(conn)
            rows = conn.execute("SELECT s.name, s.version FROM bindings b JOIN secrets s ON s.id = b.secret_id "
                                "WHERE b.function_id = ? ORDER BY s.name", (function_id,)).fetchall()
        return [BoundSecret(row["name"], str(row["version"])) for row in rows]

    def read(self, secret: BoundSecret) -> dict[str, bytes]:
        name = self.function.sibling(secret.name)
        with self._db.transaction(write=False) as conn:
            function_id = self._function_id(conn)
            row = _find(conn, "secrets", name)
            if row is None:
                raise NotFound(f"secret {name} no longer exists")
            binding = conn.execute("SELECT sealed_dek FROM bindings WHERE secret_id = ? AND function_id = ?",
                                   (row["id"], function_id)).fetchone()
            if binding is None:
                raise AccessDenied(f"secret {name} is not bound to function {self.function}")
        return self._open(name, row, binding["sealed_dek"])

    def close(self) -> None:
        self._credential = None
        self._db.close()

    def _open(self, name: QualifiedName, row: sqlite3.Row, sealed_dek: bytes) -> dict[str, bytes]:
        credential = self._live_credential()
        version = row["version"]
        try:
            dek = sealing.unseal(credential.private_key, sealed_dek,
                                 sealing.context("sealed-dek", credential.store_id, name, version, self.function))
            plaintext = sealing.decrypt(dek, row["ciphertext"],
                                        sealing.context("secret-values", credential.store_id, name, version))
            return sealing.decode_values(plaintext)
        except sealing.OpenFailed:
            raise AccessDenied(f"function {self.function}'s credential does not open secret {name}: its rows "
                               "were altered or moved from another secret, version, function or store") from None

    def _function_id(self, conn: sqlite3.Connection) -> int:
        """The function's row id, after checking the stored public key is still this credential's."""
        credential = self._live_credential()
        row = _find(conn, "functions", self.function)
        if row is None:
            raise AccessDenied(f"function {self.function} does not exist in the store {self._db.path}")
        if row["public_key"] != credential.public_key:
            raise AccessDenied(f"the credential at {self._credential_path} is not function {self.function}'s")
        return row["id"]

    def _live_credential(self) -> _Credential:
        if self._credential is None:
            raise StoreError(f"the source for function {self.function} is closed")
        return self._credential
