"""Choosing a backend by its store URL; the rest of shim only sees ``SecretStore``/``SecretSource``.

A backend is a module ``shim.store.<name>`` with two functions::

    open_store(location: str) -> SecretStore
    open_source(location: str, function: QualifiedName, credential_path: str) -> SecretSource

where ``location`` is the URL with its scheme removed (``embedded:/x/y.db`` -> ``/x/y.db``).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from ..errors import BadInput
from ..names import QualifiedName
from .base import Binding, BoundSecret, SecretInfo, SecretSource, SecretStore

__all__ = ["Binding", "BoundSecret", "SecretInfo", "SecretSource", "SecretStore", "open_store", "open_source",
           "default_store_url", "resolve_url"]

# scheme -> module; vault+http(s) and kubernetes arrive with their own issues.
_BACKENDS = {"embedded": "shim.store.embedded"}


def default_store_url() -> str:
    """``embedded:$XDG_DATA_HOME/shim/store.db`` (``~/.local/share/shim/store.db``)."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return "embedded:" + str(Path(data_home) / "shim" / "store.db")


def resolve_url(url: str | None) -> str:
    """The explicit URL, else ``SHIM_STORE``, else the default embedded store."""
    return url or os.environ.get("SHIM_STORE") or default_store_url()


def _backend(url: str):
    scheme, sep, location = url.partition(":")
    if not sep:
        raise BadInput(f"invalid store URL {url!r}: expected SCHEME:LOCATION, e.g. embedded:/path/store.db")
    module_name = _BACKENDS.get(scheme)
    if module_name is None:
        known = ", ".join(sorted(_BACKENDS))
        raise BadInput(f"unknown store {scheme!r} in {url!r}: this build knows {known}")
    return importlib.import_module(module_name), location


def open_store(url: str | None = None) -> SecretStore:
    module, location = _backend(resolve_url(url))
    return module.open_store(location)


def open_source(url: str | None, function: QualifiedName, credential_path: str) -> SecretSource:
    module, location = _backend(resolve_url(url))
    return module.open_source(location, function, credential_path)
