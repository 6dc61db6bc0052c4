"""The file catalogue: live files per area, moves, the trash and its purge.

Rows only: a move, a delete or a restore never touches stored bytes. A file replaced by
a new upload to the same path goes to the trash like a deleted one, so it can be
restored for the retention period.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from hvelv.audit.trail import AuditTrail
from hvelv.errors import Conflict, InvalidInput, NotFound
from hvelv.files.blobs import Blob
from hvelv.files.models import StoredFile
from hvelv.files.paths import Area

Sort = Literal["path", "size", "created_at"]
Order = Literal["asc", "desc"]


def _now() -> datetime:
    return datetime.now(UTC)


def live(session: Session, pid: str, area: Area, path: str) -> StoredFile | None:
    return session.scalars(
        select(StoredFile).where(
            StoredFile.project_id == pid,
            StoredFile.area == area.value,
            StoredFile.path == path,
            StoredFile.deleted_at.is_(None),
        )
    ).first()


def get_live(session: Session, pid: str, area: Area, path: str) -> StoredFile:
    found = live(session, pid, area, path)
    if found is None:
        raise NotFound(f"no file {path!r} in {area.value}", code="file_not_found")
    return found


def _to_trash(
    stored: StoredFile, actor: str, retention_days: int, now: datetime, reason: str
) -> None:
    stored.deleted_at = now
    stored.deleted_by = f"{actor} ({reason})" if reason != "deleted" else actor
    stored.purge_after = now + timedelta(days=retention_days)


def add_file(
    session: Session,
    trail: AuditTrail,
    *,
    pid: str,
    area: Area,
    path: str,
    size: int,
    sha256: str,
    content_type: str,
    uploader: str,
    blobs: Sequence[Blob],
    via: dict[str, Any],
    retention_days: int = 30,
) -> StoredFile:
    """Record a completed upload; an existing file at the path goes to the trash."""
    now = _now()
    previous = live(session, pid, area, path)
    if previous is not None:
        _to_trash(previous, uploader, retention_days, now, "replaced")
        session.flush()
    stored = StoredFile(
        id=uuid.uuid4().hex,
        project_id=pid,
        area=area.value,
        path=path,
        size=size,
        sha256=sha256,
        content_type=content_type,
        uploader=uploader,
        created_at=now,
        modified_at=now,
        blobs=[b.as_json() for b in blobs],
    )
    session.add(stored)
    session.flush()
    trail.record(
        "files.upload",
        project_id=pid,
        target=f"{area.value}:{path}",
        details={
            "file": stored.id,
            "size": size,
            "sha256": sha256,
            "replaced": previous.id if previous else None,
            **via,
        },
    )
    return stored


@dataclass
class Page:
    items: list[StoredFile]
    next_cursor: str | None


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if not text.startswith("o:"):
            raise ValueError(text)
        value = int(text[2:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("invalid cursor", code="invalid_cursor") from None
    if value < 0:
        raise InvalidInput("invalid cursor", code="invalid_cursor")
    return value


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _listing(
    query: Select[StoredFile],
    session: Session,
    sort: Sort,
    order: Order,
    limit: int,
    cursor: str | None,
) -> Page:
    column: Any = {
        "path": StoredFile.path,
        "size": StoredFile.size,
        "created_at": StoredFile.created_at,
    }[sort]
    ordering = [column.asc() if order == "asc" else column.desc(), StoredFile.id.asc()]
    start = _offset(cursor)
    rows = list(session.scalars(query.order_by(*ordering).offset(start).limit(limit + 1)))
    more = len(rows) > limit
    return Page(rows[:limit], _cursor(start + limit) if more else None)


def _prefix_filter(prefix: str) -> ColumnElement[bool]:
    return StoredFile.path.like(_escape_like(prefix) + "%", escape="\\")


def list_files(
    session: Session,
    pid: str,
    area: Area,
    *,
    prefix: str = "",
    sort: Sort = "path",
    order: Order = "asc",
    limit: int = 100,
    cursor: str | None = None,
) -> Page:
    query = select(StoredFile).where(
        StoredFile.project_id == pid,
        StoredFile.area == area.value,
        StoredFile.deleted_at.is_(None),
    )
    if prefix:
        query = query.where(_prefix_filter(prefix))
    return _listing(query, session, sort, order, limit, cursor)


def list_trash(
    session: Session, pid: str, area: Area, *, limit: int = 100, cursor: str | None = None
) -> Page:
    query = select(StoredFile).where(
        StoredFile.project_id == pid,
        StoredFile.area == area.value,
        StoredFile.deleted_at.is_not(None),
    )
    return _listing(query, session, "created_at", "desc", limit, cursor)


def move(
    session: Session, trail: AuditTrail, pid: str, area: Area, source: str, target: str
) -> list[StoredFile]:
    """Rename a file, or a folder (every file under ``source/``), within one area.

    Refuses (409) to overwrite: the caller deletes the target first if that is meant.
    """
    if source == target:
        raise InvalidInput("source and target are the same", code="same_path")
    single = live(session, pid, area, source)
    if single is not None:
        moves = [(single, target)]
    else:
        if target.startswith(source + "/"):
            raise InvalidInput("cannot move a folder into itself", code="invalid_move")
        inside = session.scalars(
            select(StoredFile).where(
                StoredFile.project_id == pid,
                StoredFile.area == area.value,
                StoredFile.deleted_at.is_(None),
                _prefix_filter(source + "/"),
            )
        ).all()
        if not inside:
            raise NotFound(f"no file or folder {source!r} in {area.value}", code="file_not_found")
        moves = [(f, target + f.path[len(source) :]) for f in inside]
    for _, new_path in moves:
        if len(new_path.encode()) > 1024:
            raise InvalidInput("a moved path would be too long", code="invalid_path")
        if live(session, pid, area, new_path) is not None:
            raise Conflict(f"{new_path!r} exists already", code="file_exists")
    now = _now()
    for stored, new_path in moves:
        old = stored.path
        stored.path = new_path
        stored.modified_at = now
        trail.record(
            "files.move",
            project_id=pid,
            target=f"{area.value}:{new_path}",
            details={"file": stored.id, "from": old, "sha256": stored.sha256},
        )
    session.flush()
    return [stored for stored, _ in moves]


def delete(
    session: Session,
    trail: AuditTrail,
    pid: str,
    area: Area,
    path: str,
    retention_days: int,
) -> StoredFile:
    stored = get_live(session, pid, area, path)
    _to_trash(stored, trail.actor, retention_days, _now(), "deleted")
    trail.record(
        "files.delete",
        project_id=pid,
        target=f"{area.value}:{path}",
        details={
            "file": stored.id,
            "sha256": stored.sha256,
            "purge_after": str(stored.purge_after),
        },
    )
    session.flush()
    return stored


def restore(
    session: Session,
    trail: AuditTrail,
    pid: str,
    area: Area,
    file_id: str,
    to: str | None = None,
) -> StoredFile:
    stored = session.get(StoredFile, file_id)
    if (
        stored is None
        or stored.project_id != pid
        or stored.area != area.value
        or stored.deleted_at is None
    ):
        raise NotFound("no such file in the trash", code="file_not_found")
    path = to or stored.path
    if live(session, pid, area, path) is not None:
        raise Conflict(
            f"{path!r} exists; restore to another path or move that file first",
            code="file_exists",
        )
    stored.path = path
    stored.deleted_at = None
    stored.deleted_by = None
    stored.purge_after = None
    stored.modified_at = _now()
    session.flush()
    trail.record(
        "files.restore",
        project_id=pid,
        target=f"{area.value}:{path}",
        details={"file": stored.id, "sha256": stored.sha256},
    )
    return stored


def purgeable(session: Session, now: datetime, limit: int = 1000) -> list[StoredFile]:
    return list(
        session.scalars(
            select(StoredFile)
            .where(StoredFile.purge_after.is_not(None), StoredFile.purge_after <= now)
            .limit(limit)
        )
    )


def total_size(session: Session, pid: str) -> int:
    value = session.scalar(
        select(func.coalesce(func.sum(StoredFile.size), 0)).where(StoredFile.project_id == pid)
    )
    return int(value or 0)
