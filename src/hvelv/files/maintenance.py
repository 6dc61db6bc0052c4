"""Housekeeping: expire unfinished uploads and purge the trash after its retention."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from hvelv.audit.trail import AuditTrail
from hvelv.files import catalog, uploads
from hvelv.files.blobs import blobs_of
from hvelv.files.models import StoredFile, Upload
from hvelv.platform import Platform

log = logging.getLogger("hvelv.files")
ACTOR = "system:maintenance"


@dataclass
class Swept:
    uploads_expired: int = 0
    files_purged: int = 0


def sweep(platform: Platform, now: datetime | None = None, batch: int = 200) -> Swept:
    """One pass; each removal is its own transaction so a failure loses nothing else."""
    now = now or datetime.now(UTC)
    swept = Swept()
    with platform.db.read() as session:
        expired = list(
            session.scalars(select(Upload.id).where(Upload.expires_at <= now).limit(batch))
        )
    for upload_id in expired:
        discard: Upload | None = None
        with platform.db.write() as session:
            upload = session.get(Upload, upload_id)
            if upload is None or upload.expires_at > now:
                continue
            if upload.status == "active" or (upload.concat == "partial" and not upload.file_id):
                discard = upload
                AuditTrail(session, platform.ledger, ACTOR).record(
                    "files.upload_expire",
                    project_id=upload.project_id,
                    target=f"{upload.area}:{upload.path or 'partial'}",
                    details={"upload": upload.id, "offset": upload.offset},
                )
                swept.uploads_expired += 1
            session.delete(upload)
        if discard is not None:  # after the commit: a failure leaves bytes, not dangling rows
            uploads.discard_stored(platform, discard)
    with platform.db.read() as session:
        doomed = [f.id for f in catalog.purgeable(session, now, batch)]
    for file_id in doomed:
        with platform.db.write() as session:
            stored = session.get(StoredFile, file_id)
            if stored is None or stored.purge_after is None or stored.purge_after > now:
                continue
            blobs = blobs_of(stored.blobs)
            AuditTrail(session, platform.ledger, ACTOR).record(
                "files.purge",
                project_id=stored.project_id,
                target=f"{stored.area}:{stored.path}",
                details={"file": stored.id, "sha256": stored.sha256},
            )
            session.delete(stored)
            swept.files_purged += 1
        for blob in blobs:
            platform.store(blob.store).delete(blob.key)
    if swept.uploads_expired or swept.files_purged:
        log.info("maintenance", extra={"swept": swept.__dict__})
    return swept
