"""Envelope encryption with AES-256-GCM.

A random data key encrypts each object; the data key is stored *wrapped* by the project
key (itself wrapped by the master key in the keyring). Rotating a project key only
re-wraps data keys; object bytes are never re-encrypted.

Sealed blobs are ``version(1) || nonce(12) || ciphertext+tag``; associated data binds
each blob to what it is (which project, which key version, which record), so a blob
copied onto another record does not decrypt.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12
SEAL_VERSION = 1


class DecryptionError(Exception):
    """A sealed blob failed authentication: wrong key, wrong context, or tampering."""


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return bytes([SEAL_VERSION]) + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < 1 + NONCE_BYTES + 16 or blob[0] != SEAL_VERSION:
        raise DecryptionError("not a sealed blob of a known version")
    nonce = blob[1 : 1 + NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, blob[1 + NONCE_BYTES :], aad)
    except InvalidTag:
        raise DecryptionError("authentication failed (wrong key, context or tampering)") from None


def derive_key(master: bytes, label: str) -> bytes:
    """A purpose-specific key derived from the master key (HKDF-SHA256)."""
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=b"hvelv:" + label.encode()
    ).derive(master)


def project_key_aad(project_id: str, version: int) -> bytes:
    return f"hvelv:project-key:{project_id}:{version}".encode()


def data_key_aad(project_id: str, version: int, key_id: int) -> bytes:
    return f"hvelv:data-key:{project_id}:{version}:{key_id}".encode()


def wrap_data_key(
    project_key: bytes, data_key: bytes, project_id: str, version: int, key_id: int
) -> bytes:
    return seal(project_key, data_key, data_key_aad(project_id, version, key_id))


def unwrap_data_key(
    project_key: bytes, wrapped: bytes, project_id: str, version: int, key_id: int
) -> bytes:
    return open_sealed(project_key, wrapped, data_key_aad(project_id, version, key_id))
