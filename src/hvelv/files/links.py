"""Upload links: let someone without an account deliver files into a project's import area.

A link is a bearer secret (``hvl_<id>_<secret>``, shown once, stored as a SHA-256 digest)
with an expiry, an optional number of uses (one use = one upload started) and an optional
total size. Whoever holds it can only start and continue tus uploads into ``import``;
they cannot list, read or delete anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from hvelv.audit.trail import AuditTrail
from hvelv.errors import InvalidInput, NotFound
from hvelv.files.models import UploadLink
from hvelv.security.tokens import UPLOAD_LINK_PREFIX, new_api_key

MAX_LINK_DAYS = 90


@dataclass
class NewLink:
    link: UploadLink
    token: str


def create(
    session: Session,
    trail: AuditTrail,
    pid: str,
    *,
    label: str,
    expires_in_hours: int,
    max_uses: int | None,
    max_bytes: int | None,
) -> NewLink:
    if expires_in_hours > MAX_LINK_DAYS * 24:
        raise InvalidInput(
            f"upload links live at most {MAX_LINK_DAYS} days", code="expiry_too_long"
        )
    link_id, token, secret_digest = new_api_key(UPLOAD_LINK_PREFIX)
    link = UploadLink(
        id=link_id,
        project_id=pid,
        label=label,
        secret_digest=secret_digest,
        created_by=trail.actor,
        expires_at=datetime.now(UTC) + timedelta(hours=expires_in_hours),
        max_uses=max_uses,
        uses=0,
        max_bytes=max_bytes,
        bytes_reserved=0,
    )
    session.add(link)
    session.flush()
    trail.record(
        "upload_link.create",
        project_id=pid,
        target=f"upload_link:{link_id}",
        details={
            "label": label,
            "expires_at": link.expires_at.isoformat(),
            "max_uses": max_uses,
            "max_bytes": max_bytes,
        },
    )
    return NewLink(link, token)


def list_links(session: Session, pid: str) -> list[UploadLink]:
    return list(
        session.scalars(
            select(UploadLink)
            .where(UploadLink.project_id == pid)
            .order_by(UploadLink.created_at.desc(), UploadLink.id)
        )
    )


def revoke(session: Session, trail: AuditTrail, pid: str, link_id: str) -> UploadLink:
    link = session.get(UploadLink, link_id)
    if link is None or link.project_id != pid:
        raise NotFound("no such upload link", code="link_not_found")
    if link.revoked_at is None:
        link.revoked_at = datetime.now(UTC)
        trail.record("upload_link.revoke", project_id=pid, target=f"upload_link:{link_id}")
    return link
