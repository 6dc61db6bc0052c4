"""Move a project's stored files from one blob store to another while the platform runs.

Per file: copy each blob that is not yet on the target (ciphertext as is: no key is
needed to move bytes), then decrypt the copy and compare the SHA-256 of the whole file
with the recorded one, then switch the file's row to the new blobs in one transaction —
only if the row did not change meanwhile (a move or delete in between simply wins and the
file is retried on the next run). Readers use whichever blobs the row names, so nothing
stops; the old copies are deleted after the switch. A failed check leaves the row and
the source untouched, removes the copy, and is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from sqlalchemy import select

from hvelv.audit.trail import AuditTrail
from hvelv.crypto.segments import IntegrityError
from hvelv.files.blobs import Blob, FileReader, blobs_of, file_sha256
from hvelv.files.models import StoredFile
from hvelv.platform import Platform
from hvelv.storage.base import StorageError

Progress = Callable[[int], None]  # called with bytes copied


@dataclass
class MigrationReport:
    files_moved: int = 0
    files_skipped: int = 0  # already on the target
    bytes_copied: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def pending_bytes(platform: Platform, pid: str, target: str) -> int:
    """Stored bytes of the project's files not yet on ``target`` (for a progress bar)."""
    total = 0
    with platform.db.read() as session:
        for data in session.scalars(select(StoredFile.blobs).where(StoredFile.project_id == pid)):
            total += sum(b.stored_size for b in blobs_of(data) if b.store != target)
    return total


def migrate_project(
    platform: Platform,
    pid: str,
    target: str,
    actor: str,
    progress: Progress | None = None,
) -> MigrationReport:
    """Move every file of ``pid`` (live and in the trash) onto the store named ``target``."""
    platform.store(target)  # fails fast on a store that is not configured
    report = MigrationReport()
    with platform.db.read() as session:
        ids = list(
            session.scalars(
                select(StoredFile.id)
                .where(StoredFile.project_id == pid)
                .order_by(StoredFile.created_at)
            )
        )
    for file_id in ids:
        _migrate_file(platform, file_id, target, actor, report, progress)
    return report


def _copy(platform: Platform, blob: Blob, target: str, progress: Progress | None) -> Blob:
    source = platform.store(blob.store)

    def chunks() -> Iterator[bytes]:
        for chunk in source.open_range(blob.key):
            if progress is not None:
                progress(len(chunk))
            yield chunk

    platform.store(target).put(blob.key, chunks())
    return replace(blob, store=target)


def _migrate_file(
    platform: Platform,
    file_id: str,
    target: str,
    actor: str,
    report: MigrationReport,
    progress: Progress | None,
) -> None:
    with platform.db.read() as session:
        stored = session.get(StoredFile, file_id)
        if stored is None:
            return
        before = list(stored.blobs)
        blobs = blobs_of(before)
        pid, path, sha = stored.project_id, f"{stored.area}:{stored.path}", stored.sha256
    if all(b.store == target for b in blobs):
        report.files_skipped += 1
        return
    copied: list[Blob] = []
    try:
        moved = []
        for blob in blobs:
            if blob.store == target:
                moved.append(blob)
                continue
            new = _copy(platform, blob, target, progress)
            copied.append(new)
            moved.append(new)
            report.bytes_copied += blob.stored_size
        with platform.db.read() as session:
            check = file_sha256(FileReader(platform, session, pid, moved, cache=False))
        if check != sha:
            raise IntegrityError(f"the copy's SHA-256 is {check}, the file's is {sha}")
    except (IntegrityError, StorageError, OSError) as exc:
        for blob in copied:
            platform.store(target).delete(blob.key)
        report.failures.append(f"{path}: {exc}")
        return
    with platform.db.write() as session:
        row = session.get(StoredFile, file_id)
        if row is None or row.blobs != before:
            switched = False
        else:
            row.blobs = [b.as_json() for b in moved]
            AuditTrail(session, platform.ledger, actor).record(
                "storage.migrate",
                project_id=pid,
                target=path,
                details={"file": file_id, "sha256": sha, "to": target},
            )
            switched = True
    if not switched:
        for blob in copied:
            platform.store(target).delete(blob.key)
        report.failures.append(f"{path}: changed during the migration; run again")
        return
    for old in blobs:
        if old.store != target:
            platform.store(old.store).delete(old.key)
    report.files_moved += 1
