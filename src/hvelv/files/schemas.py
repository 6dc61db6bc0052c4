"""Request and response bodies of the file routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from hvelv.text import Line, RequestBody


class FileOut(BaseModel):
    id: str
    path: str
    size: int
    sha256: str = Field(description="SHA-256 of the plaintext, hex")
    content_type: str
    uploader: str
    created_at: datetime
    modified_at: datetime


class FilePage(BaseModel):
    items: list[FileOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class TrashedFile(FileOut):
    deleted_at: datetime
    deleted_by: str | None
    purge_after: datetime | None


class TrashPage(BaseModel):
    items: list[TrashedFile]
    next_cursor: str | None


class Strict(RequestBody):
    """A request body (unknown fields and booleans for numbers refused)."""


class MoveIn(Strict):
    source: Line = Field(min_length=1, max_length=1024, description="File or folder path")
    target: Line = Field(min_length=1, max_length=1024, description="New path in the same area")


class MoveOut(BaseModel):
    moved: list[FileOut]


class RestoreIn(Strict):
    to: Line | None = Field(
        default=None, min_length=1, max_length=1024, description="Restore under another path"
    )


class LinkCreate(Strict):
    label: Line = Field(min_length=1, max_length=200, description="Who or what the link is for")
    expires_in_hours: int = Field(default=72, ge=1, le=90 * 24)
    max_uses: int | None = Field(default=None, ge=1, le=100_000, description="Uploads allowed")
    max_bytes: int | None = Field(default=None, ge=0, le=2**62, description="Total bytes allowed")


class LinkOut(BaseModel):
    id: str
    label: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    max_uses: int | None
    uses: int
    max_bytes: int | None
    bytes_reserved: int
    revoked: bool


class LinkCreated(LinkOut):
    token: str = Field(description="The link's secret, shown once (Bearer token for tus)")
    upload_url: str = Field(description="tus creation URL to use with the token")
