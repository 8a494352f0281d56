"""Names of functions and secrets, and the rules their keys and values obey.

A name is ``NAME``, ``NAMESPACE/NAME`` or ``ORG/NAMESPACE/NAME``; every part is a DNS label matched
against the *whole* part (Dispatch's unanchored pattern let ``ab/../x`` through).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from .errors import BadInput

DEFAULT = "default"
MAX_SECRET_BYTES = 1024 * 1024  # 1 MiB per secret: the sum of its keys and values, as Kubernetes counts

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")
_ENV_UNSAFE = re.compile(r"[^A-Z0-9]")


def check_label(part: str, what: str = "name") -> str:
    """Return ``part`` if it is a DNS label, else raise BadInput saying why."""
    if not _LABEL.fullmatch(part):
        raise BadInput(
            f"invalid {what} {part!r}: must be a DNS label (lower-case letters, digits and '-', "
            "1-63 characters, starting and ending with a letter or digit)"
        )
    return part


@dataclass(frozen=True, order=True)
class QualifiedName:
    """A function or secret name with its organisation and namespace filled in."""

    org: str
    namespace: str
    name: str

    @classmethod
    def parse(cls, text: str, *, namespace: str | None = None, org: str | None = None) -> "QualifiedName":
        """Parse ``NAME``, ``NS/NAME`` or ``ORG/NS/NAME``; missing parts come from the arguments or default."""
        parts = text.split("/") if text else [""]
        if len(parts) > 3:
            raise BadInput(f"invalid name {text!r}: use NAME, NAMESPACE/NAME or ORG/NAMESPACE/NAME")
        if len(parts) == 3:
            o, ns, n = parts
        elif len(parts) == 2:
            o, (ns, n) = org or DEFAULT, parts
        else:
            o, ns, n = org or DEFAULT, namespace or DEFAULT, parts[0]
        return cls(check_label(o, "organisation"), check_label(ns, "namespace"), check_label(n, "name"))

    def sibling(self, name: str) -> "QualifiedName":
        """The same organisation and namespace, another name."""
        return QualifiedName(self.org, self.namespace, check_label(name))

    @property
    def scope(self) -> tuple[str, str]:
        return (self.org, self.namespace)

    def __str__(self) -> str:
        return f"{self.org}/{self.namespace}/{self.name}"


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise BadInput(f"invalid key {key!r}: keys are 1-253 characters of letters, digits, '-', '_' and '.'")
    return key


def check_secret_data(data: Mapping[str, bytes]) -> dict[str, bytes]:
    """Validate a secret's keys and total size; return it as a plain dict of bytes."""
    if not data:
        raise BadInput("a secret needs at least one KEY=VALUE")
    total = 0
    for key, value in data.items():
        check_key(key)
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError("secret values are bytes")
        total += len(key.encode()) + len(value)
    if total > MAX_SECRET_BYTES:
        raise BadInput(f"secret too large: {total} bytes of keys and values, the limit is {MAX_SECRET_BYTES} (1 MiB)")
    return {k: bytes(v) for k, v in data.items()}


def env_name(secret: str, key: str) -> str:
    """``SECRET_<SECRET>_<KEY>``: upper case, every character outside [A-Z0-9] becomes ``_``."""
    return "SECRET_" + _ENV_UNSAFE.sub("_", secret.upper()) + "_" + _ENV_UNSAFE.sub("_", key.upper())


def env_names(secrets: Mapping[str, Mapping[str, object]]) -> dict[str, tuple[str, str]]:
    """Map each environment name to its (secret, key); refuse two keys that map to one name."""
    seen: dict[str, tuple[str, str]] = {}
    for secret in sorted(secrets):
        for key in sorted(secrets[secret]):
            name = env_name(secret, key)
            if name in seen:
                other = seen[name]
                raise BadInput(
                    f"secret {secret!r} key {key!r} and secret {other[0]!r} key {other[1]!r} "
                    f"both map to the environment variable {name}"
                )
            seen[name] = (secret, key)
    return seen
