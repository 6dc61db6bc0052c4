"""Keys derived from a project key for participant identities.

* the **pseudonym** of a participant is ``HMAC-SHA256(k_pseudonym, national id)`` (first 128 bits,
  hex); later issues (datasets) call :func:`pseudonym` to link data to a participant;
* the **lookup hash** finds an enrolled participant by national id without decrypting every row
  (``HMAC-SHA256(k_lookup, national id)``);
* the national id and contact channels are sealed with AES-GCM under ``k_seal`` (derived from the
  project key version recorded on the row).

``k_pseudonym`` and ``k_lookup`` derive from the project's *first* key version, which rotation
retires but never deletes, so pseudonyms stay stable when the project key is rotated.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hvelv.crypto.envelope import derive_key, open_sealed, seal
from hvelv.crypto.keyring import Keyring
from hvelv.projects import keys
from hvelv.projects.models import ProjectKey

__all__ = [
    "compact",
    "lookup_hash",
    "mask_email",
    "mask_national_id",
    "open_identity",
    "pseudonym",
    "seal_identity",
]

_SEPARATORS = re.compile(r"[\s\-:.]")


def compact(national_id: str) -> str:
    """The national id without spaces, dashes, colons or dots (as enrolment stores it)."""
    return _SEPARATORS.sub("", national_id)


def mask_national_id(raw: str) -> str:
    """A form safe for error messages and logs: only the last two characters are kept."""
    value = compact(raw)
    if len(value) <= 2:
        return "*" * len(value)
    return "*" * (len(value) - 2) + value[-2:]


def mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def _first_version(session: Session, pid: str) -> int:
    version = session.execute(
        select(func.min(ProjectKey.version)).where(ProjectKey.project_id == pid)
    ).scalar()
    if version is None:
        raise LookupError(f"project {pid} has no key")
    return int(version)


class ProjectSecrets:
    """The derived keys of one project, computed once per request or import."""

    def __init__(self, session: Session, keyring: Keyring, pid: str) -> None:
        self.pid = pid
        first = keys.project_key(session, keyring, pid, _first_version(session, pid))
        self._pseudonym_key = derive_key(first, f"consent-pseudonym:{pid}")
        self._lookup_key = derive_key(first, f"consent-lookup:{pid}")
        self.version = keys.current_version(session, pid)
        self._seal_keys = {
            self.version: derive_key(
                keys.project_key(session, keyring, pid, self.version), f"consent-seal:{pid}"
            )
        }
        self._session = session
        self._keyring = keyring

    def pseudonym(self, national_id: str) -> str:
        digest = hmac.new(self._pseudonym_key, compact(national_id).encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def lookup_hash(self, national_id: str) -> bytes:
        return hmac.new(self._lookup_key, compact(national_id).encode(), hashlib.sha256).digest()

    def _seal_key(self, version: int) -> bytes:
        if version not in self._seal_keys:
            pkey = keys.project_key(self._session, self._keyring, self.pid, version)
            self._seal_keys[version] = derive_key(pkey, f"consent-seal:{self.pid}")
        return self._seal_keys[version]

    def seal(self, what: str, row_key: str, data: dict[str, Any]) -> bytes:
        aad = f"hvelv:consent:{what}:{self.pid}:{row_key}".encode()
        payload = json.dumps(data, sort_keys=True).encode()
        return seal(self._seal_key(self.version), payload, aad)

    def open(self, what: str, row_key: str, version: int, blob: bytes) -> dict[str, Any]:
        aad = f"hvelv:consent:{what}:{self.pid}:{row_key}".encode()
        data: dict[str, Any] = json.loads(open_sealed(self._seal_key(version), blob, aad))
        return data


def seal_identity(secrets: ProjectSecrets, pseudonym_: str, data: dict[str, Any]) -> bytes:
    return secrets.seal("identity", pseudonym_, data)


def open_identity(
    secrets: ProjectSecrets, pseudonym_: str, version: int, blob: bytes
) -> dict[str, Any]:
    return secrets.open("identity", pseudonym_, version, blob)


def pseudonym(session: Session, keyring: Keyring, pid: str, national_id: str) -> str:
    """The per-project pseudonym of a national id (stable across project key rotation)."""
    return ProjectSecrets(session, keyring, pid).pseudonym(national_id)


def lookup_hash(session: Session, keyring: Keyring, pid: str, national_id: str) -> bytes:
    return ProjectSecrets(session, keyring, pid).lookup_hash(national_id)
