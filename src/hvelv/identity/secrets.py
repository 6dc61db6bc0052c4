"""TOTP secrets sealed at rest with a key derived from the master key."""

from __future__ import annotations

from hvelv.crypto.envelope import open_sealed, seal
from hvelv.crypto.keyring import Keyring


def _aad(username: str, kind: str) -> bytes:
    return f"hvelv:totp:{kind}:{username}".encode()


def seal_totp(keyring: Keyring, username: str, secret: str, kind: str = "active") -> bytes:
    return seal(keyring.derived("totp"), secret.encode(), _aad(username, kind))


def open_totp(keyring: Keyring, username: str, blob: bytes, kind: str = "active") -> str:
    return open_sealed(keyring.derived("totp"), blob, _aad(username, kind)).decode()
