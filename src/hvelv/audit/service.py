"""Reading the audit ledger: filters and keyset pagination by sequence number."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from hvelv.audit.ledger import format_ts
from hvelv.audit.models import AuditEvent

# project events an operator sees in the platform log: administration, never data use
PLATFORM_VISIBLE = (
    "project.create",
    "project.status",
    "project.key_rotate",
    "member.add",
    "member.remove",
)


@dataclass(frozen=True)
class AuditQuery:
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_seq: int | None = None
    limit: int = 100


def event_view(row: AuditEvent) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(row.body)
    body["hash"] = row.hash.hex()
    return body


def query(session: Session, q: AuditQuery, *, project_id: str | None) -> list[dict[str, Any]]:
    """Events of one project, or (project_id None) of the platform, oldest first."""
    stmt = select(AuditEvent).order_by(AuditEvent.seq).limit(q.limit)
    if project_id is None:
        stmt = stmt.where(
            or_(AuditEvent.project_id.is_(None), AuditEvent.action.in_(PLATFORM_VISIBLE))
        )
    else:
        stmt = stmt.where(AuditEvent.project_id == project_id)
    if q.actor:
        stmt = stmt.where(AuditEvent.actor == q.actor)
    if q.action:
        stmt = stmt.where(AuditEvent.action == q.action)
    if q.target:
        stmt = stmt.where(AuditEvent.target == q.target)
    if q.outcome:
        stmt = stmt.where(AuditEvent.outcome == q.outcome)
    if q.since:
        stmt = stmt.where(AuditEvent.ts >= format_ts(q.since))
    if q.until:
        stmt = stmt.where(AuditEvent.ts < format_ts(q.until))
    if q.after_seq is not None:
        stmt = stmt.where(AuditEvent.seq > q.after_seq)
    return [event_view(row) for row in session.execute(stmt).scalars()]
