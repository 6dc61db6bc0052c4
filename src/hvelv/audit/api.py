"""Routes: /v1/projects/{pid}/audit and the platform-level /v1/audit."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel

from hvelv.audit.service import AuditQuery, query
from hvelv.http.context import Ctx
from hvelv.http.routing import endpoint
from hvelv.security.actions import Action
from hvelv.text import LINE_PATTERN, IsoTime

router = APIRouter(prefix="/v1", tags=["audit"])


class AuditPage(BaseModel):
    items: list[dict[str, Any]]
    next_after_seq: int | None


def audit_query(
    actor: Annotated[str | None, Query(max_length=200, pattern=LINE_PATTERN)] = None,
    action: Annotated[str | None, Query(max_length=64, pattern=LINE_PATTERN)] = None,
    target: Annotated[str | None, Query(max_length=400, pattern=LINE_PATTERN)] = None,
    outcome: Annotated[str | None, Query(pattern="^(success|denied|failed)$")] = None,
    since: Annotated[IsoTime | None, Query(description="Events at or after (ISO 8601)")] = None,
    until: Annotated[IsoTime | None, Query(description="Events before (ISO 8601)")] = None,
    after_seq: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditQuery:
    return AuditQuery(
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        since=since,
        until=until,
        after_seq=after_seq,
        limit=limit,
    )


Filters = Annotated[AuditQuery, Depends(audit_query)]


def _page(items: list[dict[str, Any]], limit: int) -> AuditPage:
    return AuditPage(items=items, next_after_seq=items[-1]["seq"] if len(items) == limit else None)


@endpoint(router, "GET", "/projects/{pid}/audit", Action.AUDIT_READ)
def project_audit(
    pid: Annotated[str, Path(pattern=r"^p[0-9]{4,9}$")], ctx: Ctx, q: Filters
) -> AuditPage:
    """The project's audit events, oldest first; filter and page with ``after_seq``."""
    return _page(query(ctx.session, q, project_id=ctx.pid), q.limit)


@endpoint(router, "GET", "/audit", Action.PLATFORM_AUDIT_READ)
def platform_audit(ctx: Ctx, q: Filters) -> AuditPage:
    """Platform events (logins, users, project administration) for operators."""
    return _page(query(ctx.session, q, project_id=None), q.limit)
