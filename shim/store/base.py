"""The two faces every backend implements.

``SecretStore`` is the administrator's view: secrets, function identities and bindings.
``SecretSource`` is the sidecar's view: authenticated as *one* function with that function's own
credential, it lists the secrets bound to that function and reads them. A backend must enforce
the binding itself (sealed keys, Vault policies, Kubernetes RBAC): a source is never trusted just
because it says which function it serves.

Both are synchronous; the sidecar calls a source from a worker thread, behind its cache.
Values are always ``bytes``; a value that is valid UTF-8 is delivered to functions as text.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

from ..names import QualifiedName


@dataclass(frozen=True)
class SecretInfo:
    """What may be shown about a secret without revealing it."""

    name: QualifiedName
    keys: tuple[str, ...]
    version: int


@dataclass(frozen=True, order=True)
class Binding:
    secret: QualifiedName
    function: QualifiedName


@dataclass(frozen=True)
class BoundSecret:
    """One secret bound to the source's function; ``version`` changes whenever its value does."""

    name: str
    version: str


class SecretStore(ABC):
    """Administration of one backend. Methods raise ``shim.errors`` types with clear messages."""

    @abstractmethod
    def create_secret(self, name: QualifiedName, data: dict[str, bytes]) -> None:
        """Store a new secret; refuse (AlreadyExists) if it exists."""

    @abstractmethod
    def update_secret(self, name: QualifiedName, data: dict[str, bytes]) -> None:
        """Replace all keys of an existing secret (NotFound if missing)."""

    @abstractmethod
    def get_secret(self, name: QualifiedName) -> dict[str, bytes]:
        """The secret's keys and values (NotFound if missing)."""

    @abstractmethod
    def describe_secret(self, name: QualifiedName) -> SecretInfo:
        """Names, keys and version, never values (NotFound if missing)."""

    @abstractmethod
    def list_secrets(self, org: str, namespace: str | None = None) -> list[SecretInfo]:
        """Secrets of one organisation, optionally of one namespace, sorted by name."""

    @abstractmethod
    def delete_secret(self, name: QualifiedName) -> None:
        """Delete a secret and every binding of it."""

    @abstractmethod
    def create_function(self, name: QualifiedName) -> bytes:
        """Create a function identity; return its private credential (shown once, never stored)."""

    @abstractmethod
    def delete_function(self, name: QualifiedName) -> None:
        """Remove a function, its identity and its bindings."""

    @abstractmethod
    def list_functions(self, org: str, namespace: str | None = None) -> list[QualifiedName]:
        """Functions of one organisation, optionally of one namespace, sorted."""

    @abstractmethod
    def bind(self, secret: QualifiedName, function: QualifiedName) -> None:
        """Let ``function`` read ``secret`` (same org and namespace; both must exist)."""

    @abstractmethod
    def unbind(self, secret: QualifiedName, function: QualifiedName) -> None:
        """Take the secret away from the function so that its credential no longer opens it."""

    @abstractmethod
    def bindings(self, function: QualifiedName | None = None) -> list[Binding]:
        """All bindings, or those of one function, sorted."""

    def close(self) -> None:
        """Release connections or files."""


class SecretSource(ABC):
    """A sidecar's read-only access, authenticated as one function."""

    function: QualifiedName

    @abstractmethod
    def bound(self) -> list[BoundSecret]:
        """The secrets bound to this function now, with their versions (cheap: no values)."""

    @abstractmethod
    def read(self, secret: BoundSecret) -> dict[str, bytes]:
        """The values of one bound secret at ``secret.version`` (or newer)."""

    def watch(self, changed: Callable[[], None]) -> None:
        """Call ``changed`` (from any thread) when bindings or values may have changed.

        Optional: backends with change notification (a Kubernetes watch) use it to invalidate the
        sidecar's cache early; the staleness bound holds without it.
        """

    def close(self) -> None:
        """Release connections and forget credentials."""
