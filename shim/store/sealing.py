"""The cryptography of the embedded store, kept apart so it can be read (and reviewed) on its own.

* Symmetric: AES-256-GCM; a ciphertext is ``nonce (12 bytes) || ciphertext+tag``.
* Sealing to a function: ephemeral X25519 -> ECDH -> HKDF-SHA256 -> AES-256-GCM; a sealed blob is
  ``ephemeral public key (32 bytes) || nonce || ciphertext+tag``.
* Every ciphertext carries associated data from ``context()`` naming exactly what it belongs to, so a
  blob moved to another store, secret, version or function fails to open instead of being misused.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12
_TAG_BYTES = 16
_RAW_PUBLIC = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
_RAW_PRIVATE = (serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


class OpenFailed(Exception):
    """A blob did not authenticate: wrong key, altered, or bound to another identity. Carries no detail."""


def context(kind: str, store_id: str, *parts: object) -> bytes:
    """Associated data such as ``shim/v1/secret-values|<store id>|org/ns/name|3``.

    Parts are names (DNS labels joined by '/'), hex ids and integers, so '|' cannot be ambiguous.
    """
    return "|".join(["shim/v1/" + kind, store_id, *map(str, parts)]).encode()


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < NONCE_BYTES + _TAG_BYTES:
        raise OpenFailed()
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise OpenFailed() from None


def encode_values(data: Mapping[str, bytes]) -> bytes:
    """Deterministic serialisation of a secret: JSON, sorted keys, standard base64 values, no spaces."""
    doc = {key: base64.b64encode(data[key]).decode("ascii") for key in sorted(data)}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("ascii")


def decode_values(blob: bytes) -> dict[str, bytes]:
    try:
        doc = json.loads(blob)
        return {str(key): base64.b64decode(value, validate=True) for key, value in doc.items()}
    except (ValueError, TypeError, AttributeError):
        raise OpenFailed() from None


def new_identity() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as raw (private, public) bytes."""
    private = X25519PrivateKey.generate()
    return private.private_bytes(*_RAW_PRIVATE), private.public_key().public_bytes(*_RAW_PUBLIC)


def public_of(private_raw: bytes) -> bytes:
    """The public key of a raw X25519 private key (ValueError if it is not 32 bytes)."""
    return X25519PrivateKey.from_private_bytes(private_raw).public_key().public_bytes(*_RAW_PUBLIC)


def seal(recipient_public: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt so that only the holder of ``recipient_public``'s private key can open it."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes(*_RAW_PUBLIC)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    key = _seal_key(shared, ephemeral_public, recipient_public, aad)
    return ephemeral_public + encrypt(key, plaintext, aad)


def unseal(private_raw: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Open a ``seal()`` blob with a raw private key; OpenFailed if it was not sealed to it under ``aad``."""
    try:
        private = X25519PrivateKey.from_private_bytes(private_raw)
        ephemeral_public = sealed[:KEY_BYTES]
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    except ValueError:  # malformed key, or a low-order point giving an all-zero secret
        raise OpenFailed() from None
    recipient_public = private.public_key().public_bytes(*_RAW_PUBLIC)
    return decrypt(_seal_key(shared, ephemeral_public, recipient_public, aad), sealed[KEY_BYTES:], aad)


def _seal_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes, aad: bytes) -> bytes:
    """Derive the wrapping key; both public keys and the full identity context go into HKDF."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=ephemeral_public + recipient_public,
                info=b"shim/v1/seal-key|" + aad)
    return hkdf.derive(shared)
