"""File tables: stored files (with trash), uploads in progress, and upload links.

A file's bytes are one or more encrypted blobs (a concatenated upload keeps its parts'
blobs) listed in ``blobs``; renaming, moving and trashing a file only change rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from hvelv.db.base import Base, UTCDateTime, utcnow


class StoredFile(Base):
    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.pid", ondelete="CASCADE"))
    area: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(255))
    uploader: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    blobs: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_by: Mapped[str | None] = mapped_column(String(200))
    purge_after: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        # one live file per path; trashed versions may share it
        Index(
            "uq_files_live_path",
            "project_id",
            "area",
            "path",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index("ix_files_project_area", "project_id", "area", "deleted_at"),
    )


class Upload(Base):
    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.pid", ondelete="CASCADE"), index=True
    )
    area: Mapped[str] = mapped_column(String(16))
    path: Mapped[str | None] = mapped_column(String(1024))
    content_type: Mapped[str] = mapped_column(String(255))
    metadata_header: Mapped[str] = mapped_column(String(4096), default="")
    # None while the length is deferred (tus creation-defer-length); ``reserved`` is then
    # what the upload counts against quotas: its offset, plus the bytes a PATCH may still
    # bring while it runs
    length: Mapped[int | None] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    concat: Mapped[str] = mapped_column(String(8), default="none")  # none|partial|final
    partials: Mapped[list[str]] = mapped_column(JSON, default=list)
    store: Mapped[str] = mapped_column(String(16))
    storage_key: Mapped[str] = mapped_column(String(200))
    store_upload_id: Mapped[str | None] = mapped_column(String(1024))
    key_id: Mapped[int] = mapped_column(Integer)
    segment_size: Mapped[int] = mapped_column(Integer)
    creator: Mapped[str] = mapped_column(String(200))
    link_id: Mapped[str | None] = mapped_column(String(12))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active|completed
    sha256: Mapped[str | None] = mapped_column(String(64))
    file_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UploadLink(Base):
    __tablename__ = "upload_links"

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.pid", ondelete="CASCADE"), index=True
    )
    label: Mapped[str] = mapped_column(String(200))
    secret_digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    max_uses: Mapped[int | None] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    max_bytes: Mapped[int | None] = mapped_column(BigInteger)
    bytes_reserved: Mapped[int] = mapped_column(BigInteger, default=0)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
