"""The ``shim`` command line: administration of secrets, functions and bindings on any backend.

Every administrator command talks to the backend only through ``open_store(url)`` and the
``SecretStore`` interface, so it behaves the same whichever store URL is chosen. ``shim run`` and
``shim demo`` hand the rest of the command line to the sidecar and the demo (imported lazily, so
that the administrator commands never import them).

Exit status: 0 success, 2 bad input (``BadInput`` and usage errors), 1 any other failure,
130 on Ctrl-C. Errors are one line on stderr; a secret value never appears in any message.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import traceback
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from . import __version__
from .errors import BadInput, ShimError
from .names import MAX_SECRET_BYTES, QualifiedName, check_key, check_secret_data
from .store import open_store
from .store.base import SecretStore

PROG = "shim"


class _UsageError(BadInput):
    """An argparse usage error, reported as one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line instead of printing the usage."""

    def error(self, message: str):  # type: ignore[override]
        raise _UsageError(message)


# ---------------------------------------------------------------- input helpers


def _name(text: str, args: argparse.Namespace, what: str = "name") -> QualifiedName:
    """Parse a SECRET or FUNCTION argument; ``--namespace``/``--org`` fill in missing parts."""
    if "=" in text:
        # Most likely a KEY=VALUE given where the name belongs: never echo it, it may hold a value.
        raise BadInput(f"invalid {what}: it contains '='; give the {what} first, then KEY=VALUE arguments")
    return QualifiedName.parse(text, namespace=getattr(args, "namespace", None), org=getattr(args, "org", None))


def _read_limited(stream) -> bytes:
    """Read at most one byte more than a secret may hold, so the size check can refuse it."""
    return stream.read(MAX_SECRET_BYTES + 1)


def _secret_data(args: argparse.Namespace) -> dict[str, bytes]:
    """Collect KEY=VALUE, --from-file KEY=PATH and --from-stdin KEY into validated bytes."""
    items: list[tuple[str, Callable[[], bytes]]] = []
    for index, pair in enumerate(args.pairs, start=1):
        key, sep, value = pair.partition("=")
        if not sep:
            raise BadInput(f"value argument {index} is not KEY=VALUE (no '='); use KEY=VALUE, "
                           "--from-file KEY=PATH or --from-stdin KEY")
        if not key:
            raise BadInput(f"value argument {index} has an empty KEY; use KEY=VALUE")
        items.append((key, lambda value=value: value.encode("utf-8", "surrogateescape")))
    for spec in args.from_file or ():
        key, sep, path = spec.partition("=")
        if not sep or not key or not path:
            raise BadInput(f"--from-file {spec!r}: expected KEY=PATH")
        items.append((key, lambda path=path, key=key: _read_file(key, path)))
    if args.from_stdin is not None:
        if not args.from_stdin:
            raise BadInput("--from-stdin needs a KEY")
        items.append((args.from_stdin, lambda: _read_limited(sys.stdin.buffer)))

    seen: set[str] = set()
    for key, _ in items:
        check_key(key)
        if key in seen:
            raise BadInput(f"key {key!r} is given more than once")
        seen.add(key)
    return check_secret_data({key: read() for key, read in items})


def _read_file(key: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return _read_limited(f)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise BadInput(f"--from-file {key}: cannot read {path!r}: {reason}") from None


@contextmanager
def _store(args: argparse.Namespace) -> Iterator[SecretStore]:
    store = open_store(getattr(args, "store", None))
    try:
        yield store
    finally:
        store.close()


# ---------------------------------------------------------------- output helpers


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        _out("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())


def _text_or_none(value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _keys(keys: Sequence[str]) -> str:
    return ", ".join(sorted(keys)) if keys else "-"


# ---------------------------------------------------------------- secret commands


def cmd_secret_write(args: argparse.Namespace) -> int:
    """``secret create`` (refuses an existing secret) and ``secret update`` (replaces all its keys)."""
    name = _name(args.secret, args, "secret")
    data = _secret_data(args)
    creating = args.cmd == "secret create"
    with _store(args) as store:
        (store.create_secret if creating else store.update_secret)(name, data)
    _out(f"secret {name} {'created' if creating else 'updated'} (keys: {_keys(list(data))})")
    return 0


def cmd_secret_get(args: argparse.Namespace) -> int:
    name = _name(args.secret, args, "secret")
    with _store(args) as store:
        info = store.describe_secret(name)
        values = store.get_secret(name)
    keys = sorted(values)
    if args.json:
        doc: dict[str, object] = {"name": str(info.name), "version": info.version, "keys": keys}
        if args.reveal:
            text = {k: _text_or_none(v) for k, v in values.items()}
            doc["data"] = {k: t for k, t in text.items() if t is not None}
            doc["binary"] = {k: base64.b64encode(values[k]).decode("ascii") for k, t in text.items() if t is None}
        _json(doc)
        return 0
    rows = []
    for key in keys:
        value = values[key]
        if not args.reveal:
            shown = f"<hidden, {len(value)} bytes>"
        else:
            text = _text_or_none(value)
            shown = text if text is not None else "(binary, base64) " + base64.b64encode(value).decode("ascii")
        rows.append((key, shown))
    _out(f"secret {info.name} (version {info.version})")
    if rows:
        width = max(len(k) for k, _ in rows)
        for key, shown in rows:
            _out(f"  {key.ljust(width)}  {shown}")
    return 0


def cmd_secret_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        infos = store.list_secrets(args.org or "default", args.namespace)
    infos = sorted(infos, key=lambda i: i.name)
    if args.json:
        _json([{"name": str(i.name), "version": i.version, "keys": sorted(i.keys)} for i in infos])
    elif infos:
        _table(("SECRET", "VERSION", "KEYS"), [(str(i.name), str(i.version), _keys(i.keys)) for i in infos])
    return 0


def cmd_secret_delete(args: argparse.Namespace) -> int:
    name = _name(args.secret, args, "secret")
    with _store(args) as store:
        store.delete_secret(name)
    _out(f"secret {name} deleted")
    return 0


# ---------------------------------------------------------------- function commands


def _open_key_out(path: str) -> int:
    """Create PATH for the credential: new file only, mode 0600 from the start."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        raise BadInput(f"--key-out {path!r} exists; refusing to overwrite it (remove it or choose another path)") from None
    except OSError as exc:
        raise BadInput(f"--key-out {path!r}: cannot create it: {exc.strerror or type(exc).__name__}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask did, the credential is readable by its owner only
    except OSError:
        pass
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def cmd_function_create(args: argparse.Namespace) -> int:
    name = _name(args.function, args, "function")
    fd = _open_key_out(args.key_out) if args.key_out else None  # before the store: refuse early, lose nothing
    done = False
    try:
        with _store(args) as store:
            credential = store.create_function(name)
            if fd is not None:
                try:
                    _write_all(fd, credential)
                    os.fsync(fd)
                except OSError as exc:
                    store.delete_function(name)  # a credential nobody holds is useless: undo
                    raise ShimError(f"cannot write the credential to {args.key_out!r}: "
                                    f"{exc.strerror or type(exc).__name__}; function {name} not created") from None
        done = True
    finally:
        if fd is not None:
            os.close(fd)
            if not done:  # the file is ours (O_EXCL) and holds nothing useful
                try:
                    os.unlink(args.key_out)
                except OSError:
                    pass
    if args.key_out:
        _out(f"function {name} created; its credential is in {args.key_out} (mode 0600), shown only this once")
    else:
        out = sys.stdout.buffer
        out.write(credential)
        if sys.stdout.isatty() and not credential.endswith(b"\n"):
            out.write(b"\n")
        out.flush()
        sys.stderr.write(f"function {name} created; the credential above is shown only this once\n")
    return 0


def cmd_function_delete(args: argparse.Namespace) -> int:
    name = _name(args.function, args, "function")
    with _store(args) as store:
        store.delete_function(name)
    _out(f"function {name} deleted")
    return 0


def cmd_function_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        names = sorted(store.list_functions(args.org or "default", args.namespace))
    if args.json:
        _json([str(n) for n in names])
    else:
        for n in names:
            _out(str(n))
    return 0


# ---------------------------------------------------------------- bindings


def cmd_bind(args: argparse.Namespace) -> int:
    """``bind`` and ``unbind``: the same arguments, the opposite store call."""
    secret, function = _name(args.secret, args, "secret"), _name(args.function, args, "function")
    binding = args.cmd == "bind"
    with _store(args) as store:
        (store.bind if binding else store.unbind)(secret, function)
    _out(f"secret {secret} {'bound to' if binding else 'unbound from'} function {function}")
    return 0


def cmd_bindings(args: argparse.Namespace) -> int:
    function = _name(args.function, args, "function") if args.function else None
    with _store(args) as store:
        found = store.bindings(function)
    if function is None:  # --org/--namespace narrow a listing of all bindings
        found = [b for b in found
                 if (args.org is None or b.function.org == args.org)
                 and (args.namespace is None or b.function.namespace == args.namespace)]
    found = sorted(found)
    if args.json:
        _json([{"secret": str(b.secret), "function": str(b.function)} for b in found])
    elif found:
        _table(("FUNCTION", "SECRET"), [(str(b.function), str(b.secret)) for b in found])
    return 0


# ---------------------------------------------------------------- delegated commands


def _run(argv: list[str]) -> int:
    from .sidecar import run_main

    return run_main(argv)


def _demo(argv: list[str]) -> int:
    from .demo import main as demo_main

    return demo_main(argv)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "secret create": cmd_secret_write,
    "secret update": cmd_secret_write,
    "secret get": cmd_secret_get,
    "secret list": cmd_secret_list,
    "secret delete": cmd_secret_delete,
    "function create": cmd_function_create,
    "function delete": cmd_function_delete,
    "function list": cmd_function_list,
    "bind": cmd_bind,
    "unbind": cmd_bind,
    "bindings": cmd_bindings,
}

# These take the rest of the command line as it is; argparse never sees it.
DELEGATES: dict[str, Callable[[list[str]], int]] = {"run": _run, "demo": _demo}


# ---------------------------------------------------------------- argparse


STORE_HELP = "backend URL (default: $SHIM_STORE, else the embedded store under $XDG_DATA_HOME/shim/)"


def build_parser() -> argparse.ArgumentParser:
    # Options accepted on every subcommand. SUPPRESS: absent on the subcommand leaves the global value.
    store_opt = _Parser(add_help=False)
    store_opt.add_argument("--store", metavar="URL", default=argparse.SUPPRESS, help=STORE_HELP)
    scope = _Parser(add_help=False)
    scope.add_argument("-n", "--namespace", metavar="NS", help="namespace for names given without one (default: default)")
    scope.add_argument("--org", metavar="ORG", help="organisation for names given without one (default: default)")
    common = [store_opt, scope]
    as_json = _Parser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="stable JSON output")

    parser = _Parser(prog=PROG, description="shim: secrets for serverless functions, delivered per invocation.")
    parser.add_argument("--store", metavar="URL", default=None, help=STORE_HELP)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    top = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)

    def leaf(sub, name: str, cmd: str, help: str, parents=()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=[*common, *parents])
        p.set_defaults(cmd=cmd)
        return p

    secret = top.add_parser("secret", help="create, update, show, list and delete secrets")
    s = secret.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help in (("create", "store a new secret (refuses an existing one)"),
                       ("update", "replace all keys of a secret")):
        p = leaf(s, name, f"secret {name}", help)
        p.add_argument("secret", metavar="SECRET", help="NAME, NAMESPACE/NAME or ORG/NAMESPACE/NAME")
        p.add_argument("pairs", nargs="*", metavar="KEY=VALUE", help="a text value")
        p.add_argument("--from-file", action="append", metavar="KEY=PATH", help="a value read from a file (repeatable)")
        p.add_argument("--from-stdin", metavar="KEY", help="a value read from standard input")
    p = leaf(s, "get", "secret get", "show a secret; values stay hidden without --reveal", [as_json])
    p.add_argument("secret", metavar="SECRET")
    p.add_argument("--reveal", action="store_true", help="show the values (non-UTF-8 values as base64)")
    leaf(s, "list", "secret list", "list secrets: names and keys, never values", [as_json])
    p = leaf(s, "delete", "secret delete", "delete a secret and its bindings")
    p.add_argument("secret", metavar="SECRET")

    function = top.add_parser("function", help="create, delete and list function identities")
    f = function.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = leaf(f, "create", "function create", "create a function identity; prints its credential once")
    p.add_argument("function", metavar="FUNCTION")
    p.add_argument("--key-out", metavar="PATH", help="write the credential to a new file PATH (mode 0600) instead of stdout")
    p = leaf(f, "delete", "function delete", "remove a function, its identity and its bindings")
    p.add_argument("function", metavar="FUNCTION")
    leaf(f, "list", "function list", "list functions", [as_json])

    for name, help in (("bind", "let FUNCTION read SECRET"), ("unbind", "take SECRET away from FUNCTION")):
        p = leaf(top, name, name, help)
        p.add_argument("secret", metavar="SECRET")
        p.add_argument("function", metavar="FUNCTION")
    p = leaf(top, "bindings", "bindings", "list bindings (of one FUNCTION, or all)", [as_json])
    p.add_argument("function", metavar="FUNCTION", nargs="?")

    # Listed for --help only: main() hands their arguments over before argparse runs.
    top.add_parser("run", help="the sidecar (shim run --help)", add_help=False)
    top.add_parser("demo", help="a first look on the embedded store (shim demo --help)", add_help=False)
    return parser


def _split_delegate(argv: list[str]) -> tuple[Callable[[list[str]], int], str | None, list[str]] | None:
    """``shim [--store URL] run|demo ARGS...`` -> (handler, store, ARGS), else None."""
    i, store = 0, None
    while i < len(argv):
        if argv[i] == "--store" and i + 1 < len(argv):
            store, i = argv[i + 1], i + 2
        elif argv[i].startswith("--store="):
            store, i = argv[i].partition("=")[2], i + 1
        else:
            break
    if i < len(argv) and argv[i] in DELEGATES:
        return DELEGATES[argv[i]], store, argv[i + 1:]
    return None


def _parse(argv: list[str]) -> argparse.Namespace:
    args, extra = build_parser().parse_known_args(argv)
    if extra and getattr(args, "pairs", None) is not None and not any(e.startswith("-") for e in extra):
        args.pairs.extend(extra)  # KEY=VALUE arguments given after an option
    elif extra:
        options = [e for e in extra if e.startswith("-")]
        others = len(extra) - len(options)
        what = ", ".join(options) + (f" and {others} more" if options and others else "")
        # Never echo a non-option argument: it may be a value typed in the wrong place.
        raise _UsageError(f"unrecognized arguments: {what}" if options else
                          f"{others} unexpected argument(s) after the command")
    return args


# ---------------------------------------------------------------- main


def _fail(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: " + " ".join(str(message).split()) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        delegate = _split_delegate(argv)
        if delegate is not None:
            handler, store, rest = delegate
            if store:
                os.environ["SHIM_STORE"] = store  # both run and demo choose their store by resolve_url()
            return handler(rest)
        args = _parse(argv)
        return COMMANDS[args.cmd](args)
    except BadInput as exc:
        _fail(str(exc))
        return 2
    except ShimError as exc:
        _fail(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except BrokenPipeError:
        try:  # the reader went away (shim ... | head): no message, and no second error at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence: never show str(exc)
        if os.environ.get("SHIM_DEBUG") == "1":
            traceback.print_exc()
        detail = f" ({exc.strerror})" if isinstance(exc, OSError) and exc.strerror else ""
        _fail(f"unexpected {type(exc).__name__}{detail}; set SHIM_DEBUG=1 for a traceback")
        return 1


if __name__ == "__main__":
    sys.exit(main())
