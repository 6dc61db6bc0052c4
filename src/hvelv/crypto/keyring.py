"""The instance keyring: a file in HVELV_HOME (mode 0600) with the platform's keys.

* ``master_key`` — wraps every project key and derives platform secrets (TOTP secrets).
* ``signing_key`` — Ed25519; signs audit checkpoints and consent receipts.
* ``token_key`` — Ed25519; signs access tokens (EdDSA JWTs).

The keyring never leaves the instance; a replica gets the same file from the operator
(or, later, the keys from an external KMS).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from hvelv.crypto.envelope import derive_key, new_key

KEYRING_FILE = "keyring.json"
FORMAT = 1


class KeyringError(Exception):
    """The keyring is missing, unreadable, malformed or too widely readable."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise KeyringError(f"keyring field {name!r} is not base64") from None


def public_key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Keyring:
    master_key: bytes
    signing_key: Ed25519PrivateKey
    token_key: Ed25519PrivateKey

    @property
    def signing_public(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()

    @property
    def token_public(self) -> Ed25519PublicKey:
        return self.token_key.public_key()

    @property
    def signing_key_id(self) -> str:
        return public_key_id(self.signing_public)

    @property
    def token_key_id(self) -> str:
        return public_key_id(self.token_public)

    def derived(self, label: str) -> bytes:
        return derive_key(self.master_key, label)

    @classmethod
    def generate(cls) -> Keyring:
        return cls(
            master_key=new_key(),
            signing_key=Ed25519PrivateKey.generate(),
            token_key=Ed25519PrivateKey.generate(),
        )

    def to_json(self) -> str:
        def raw(key: Ed25519PrivateKey) -> bytes:
            return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

        return json.dumps(
            {
                "format": FORMAT,
                "master_key": _b64(self.master_key),
                "signing_key": _b64(raw(self.signing_key)),
                "token_key": _b64(raw(self.token_key)),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Keyring:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise KeyringError("keyring is not valid JSON") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise KeyringError(f"keyring format must be {FORMAT}")
        try:
            master = _unb64(data["master_key"], "master_key")
            signing = Ed25519PrivateKey.from_private_bytes(
                _unb64(data["signing_key"], "signing_key")
            )
            token = Ed25519PrivateKey.from_private_bytes(_unb64(data["token_key"], "token_key"))
        except KeyError as exc:
            raise KeyringError(f"keyring lacks {exc.args[0]!r}") from None
        except ValueError as exc:
            raise KeyringError(f"keyring holds an invalid key: {exc}") from None
        if len(master) != 32:
            raise KeyringError("master_key must be 32 bytes")
        return cls(master_key=master, signing_key=signing, token_key=token)


def keyring_path(home: Path) -> Path:
    return home / KEYRING_FILE


def create_keyring(home: Path) -> Keyring:
    """Generate a keyring in ``home``; refuses to overwrite an existing one."""
    return write_keyring(home, Keyring.generate())


def write_keyring(home: Path, keyring: Keyring) -> Keyring:
    """Write ``keyring`` to ``home`` (0600, fsync'ed); refuses to overwrite."""
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    path = keyring_path(home)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyringError(f"a keyring already exists at {path}; refusing to overwrite") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(keyring.to_json())
        handle.flush()
        os.fsync(handle.fileno())
    return keyring


def load_keyring(home: Path) -> Keyring:
    path = keyring_path(home)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyringError(f"no keyring at {path}; run `hvelv init` first") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyringError(f"keyring {path} is readable by others; run: chmod 600 {path}")
    return Keyring.from_json(path.read_text())
