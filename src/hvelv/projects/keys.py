"""Project keys (wrapped by the master key) and per-object data keys (wrapped by them).

Rotation makes a new project key version and re-wraps every data key of the project;
object bytes are never re-encrypted, and the old version is retired.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hvelv.crypto.envelope import (
    new_key,
    open_sealed,
    project_key_aad,
    seal,
    unwrap_data_key,
    wrap_data_key,
)
from hvelv.crypto.keyring import Keyring
from hvelv.projects.models import DataKey, ProjectKey


def create_project_key(session: Session, keyring: Keyring, pid: str, version: int = 1) -> None:
    wrapped = seal(keyring.master_key, new_key(), project_key_aad(pid, version))
    session.add(ProjectKey(project_id=pid, version=version, wrapped=wrapped))
    session.flush()


def current_version(session: Session, pid: str) -> int:
    version = session.execute(
        select(func.max(ProjectKey.version)).where(
            ProjectKey.project_id == pid, ProjectKey.retired_at.is_(None)
        )
    ).scalar()
    if version is None:
        raise LookupError(f"project {pid} has no active key")
    return int(version)


def project_key(session: Session, keyring: Keyring, pid: str, version: int) -> bytes:
    row = session.get(ProjectKey, (pid, version))
    if row is None:
        raise LookupError(f"project {pid} has no key version {version}")
    return open_sealed(keyring.master_key, row.wrapped, project_key_aad(pid, version))


def new_data_key(session: Session, keyring: Keyring, pid: str) -> tuple[int, bytes]:
    """(data key id, raw key) for a new object; the wrapped key is stored."""
    version = current_version(session, pid)
    pkey = project_key(session, keyring, pid, version)
    raw = new_key()
    row = DataKey(project_id=pid, key_version=version, wrapped=b"")
    session.add(row)
    session.flush()
    row.wrapped = wrap_data_key(pkey, raw, pid, version, row.id)
    session.flush()
    return row.id, raw


def data_key(session: Session, keyring: Keyring, pid: str, key_id: int) -> bytes:
    row = session.get(DataKey, key_id)
    if row is None or row.project_id != pid:
        raise LookupError(f"project {pid} has no data key {key_id}")
    pkey = project_key(session, keyring, pid, row.key_version)
    return unwrap_data_key(pkey, row.wrapped, pid, row.key_version, row.id)


def rotate(session: Session, keyring: Keyring, pid: str) -> tuple[int, int]:
    """New key version; re-wrap all data keys. Returns (new version, keys re-wrapped)."""
    old_version = current_version(session, pid)
    new_version = old_version + 1
    create_project_key(session, keyring, pid, new_version)
    new_pkey = project_key(session, keyring, pid, new_version)
    cache: dict[int, bytes] = {}
    count = 0
    for row in session.execute(select(DataKey).where(DataKey.project_id == pid)).scalars():
        if row.key_version not in cache:
            cache[row.key_version] = project_key(session, keyring, pid, row.key_version)
        raw = unwrap_data_key(cache[row.key_version], row.wrapped, pid, row.key_version, row.id)
        row.wrapped = wrap_data_key(new_pkey, raw, pid, new_version, row.id)
        row.key_version = new_version
        count += 1
    now = datetime.now(UTC)
    for old in session.execute(
        select(ProjectKey).where(ProjectKey.project_id == pid, ProjectKey.version < new_version)
    ).scalars():
        if old.retired_at is None:
            old.retired_at = now
    session.flush()
    return new_version, count
