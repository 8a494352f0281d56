"""The few exception types the whole of shim speaks.

Every message is written for a human and must never contain a secret value: messages name
secrets, keys and functions, nothing else. The CLI maps ``BadInput`` to exit status 2 and every
other ``ShimError`` to 1.
"""


class ShimError(Exception):
    """A failure with a clear one-line explanation (exit status 1)."""


class BadInput(ShimError):
    """The user asked for something invalid (exit status 2)."""


class NotFound(BadInput):
    """A named secret, function or binding does not exist."""


class AlreadyExists(BadInput):
    """A create would overwrite something that exists."""


class StoreError(ShimError):
    """The backend cannot be read or written (corrupt, foreign, wrongly keyed, unreachable)."""


class AccessDenied(StoreError):
    """The backend refused the presented credential for this secret or function."""


class SecretUnavailable(ShimError):
    """A bound secret could not be fetched for an invocation; ``secret`` names it (or is None)."""

    def __init__(self, message: str, secret: str | None = None) -> None:
        super().__init__(message)
        self.secret = secret
