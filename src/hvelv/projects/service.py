"""Projects, memberships and API keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from hvelv.audit.trail import AuditTrail
from hvelv.crypto.keyring import Keyring
from hvelv.errors import Conflict, InvalidInput, NotFound
from hvelv.identity.models import User
from hvelv.projects import keys
from hvelv.projects.models import ApiKey, Membership, Project
from hvelv.security.actions import Action, Role, api_key_grantable
from hvelv.security.auth_cache import ProjectView
from hvelv.security.authorize import ProjectFacts
from hvelv.security.tokens import new_api_key

FIRST_NUMBER = 1001
STATUSES = ("active", "frozen", "closed")


def facts(project: Project | ProjectView) -> ProjectFacts:
    if isinstance(project, ProjectView):
        return project.facts
    return ProjectFacts(
        pid=project.pid,
        status=project.status,
        approval_start=project.approval_start,
        approval_end=project.approval_end,
    )


def view(project: Project) -> ProjectView:
    """The project's metadata detached from the session (kept by the authorization cache)."""
    return ProjectView(
        pid=project.pid,
        name=project.name,
        description=project.description,
        ethics_ref=project.ethics_ref,
        approval_start=project.approval_start,
        approval_end=project.approval_end,
        purposes=tuple(dict(p) for p in project.purposes),
        status=project.status,
        quota_bytes=project.quota_bytes,
        created_at=project.created_at,
        facts=facts(project),
    )


def _check_period(start: date, end: date) -> None:
    if end < start:
        raise InvalidInput(
            "approval_end must not be before approval_start", code="invalid_approval_period"
        )


def create_project(
    session: Session,
    trail: AuditTrail,
    keyring: Keyring,
    creator_id: int,
    *,
    name: str,
    ethics_ref: str,
    approval_start: date,
    approval_end: date,
    purposes: list[dict[str, Any]],
    description: str = "",
    quota_bytes: int | None = None,
) -> Project:
    _check_period(approval_start, approval_end)
    number = (session.execute(select(func.max(Project.number))).scalar() or FIRST_NUMBER - 1) + 1
    project = Project(
        pid=f"p{number}",
        number=number,
        name=name,
        description=description,
        ethics_ref=ethics_ref,
        approval_start=approval_start,
        approval_end=approval_end,
        purposes=purposes,
        status="active",
        quota_bytes=quota_bytes,
        created_by=creator_id,
    )
    session.add(project)
    session.flush()
    keys.create_project_key(session, keyring, project.pid)
    trail.record(
        "project.create",
        target=f"project:{project.pid}",
        project_id=project.pid,
        details={
            "ethics_ref": ethics_ref,
            "approval": [approval_start.isoformat(), approval_end.isoformat()],
            "purposes": purposes,
        },
    )
    return project


def get_project(session: Session, pid: str) -> Project:
    project = session.get(Project, pid)
    if project is None:
        raise NotFound(f"no project {pid}", code="project_not_found")
    return project


def list_projects(
    session: Session, *, user_id: int | None, after: str | None, limit: int
) -> list[Project]:
    """All projects (user_id None, operators) or the ones the user is a member of."""
    query = select(Project).order_by(Project.number).limit(limit)
    if user_id is not None:
        query = query.where(
            Project.pid.in_(select(Membership.project_id).where(Membership.user_id == user_id))
        )
    if after:
        after_project = session.get(Project, after)
        if after_project is not None:
            query = query.where(Project.number > after_project.number)
    return list(session.execute(query).scalars())


def update_project(
    session: Session, trail: AuditTrail, project: Project, changes: dict[str, Any]
) -> Project:
    for field, value in changes.items():
        setattr(project, field, value)
    _check_period(project.approval_start, project.approval_end)
    if "status" in changes and changes["status"] not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
    recorded = {k: (v.isoformat() if isinstance(v, date) else v) for k, v in changes.items()}
    action = (
        "project.status"
        if {"status", "approval_start", "approval_end"} & set(changes)
        else "project.update"
    )
    trail.record(action, target=f"project:{project.pid}", project_id=project.pid, details=recorded)
    session.flush()
    return project


def roles_of(session: Session, pid: str, user_id: int) -> frozenset[Role]:
    rows = session.execute(
        select(Membership.role).where(Membership.project_id == pid, Membership.user_id == user_id)
    ).scalars()
    return frozenset(Role(r) for r in rows)


@dataclass(frozen=True)
class MemberView:
    username: str
    display_name: str
    roles: list[str]


def list_members(session: Session, pid: str) -> list[MemberView]:
    rows = session.execute(
        select(User.username, User.display_name, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.project_id == pid)
        .order_by(User.username, Membership.role)
    ).all()
    grouped: dict[str, MemberView] = {}
    for username, display, role in rows:
        view = grouped.setdefault(username, MemberView(username, display, []))
        view.roles.append(role)
    return list(grouped.values())


def add_member(
    session: Session, trail: AuditTrail, pid: str, username: str, role: Role, by_user: int
) -> None:
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        raise NotFound(f"no user {username!r}", code="user_not_found")
    if user.is_operator:
        raise InvalidInput(
            "operators cannot be project members (they hold no data actions)",
            code="operator_not_member",
        )
    if session.get(Membership, (pid, user.id, role.value)) is not None:
        raise Conflict(f"{username} already has role {role.value}", code="member_exists")
    session.add(Membership(project_id=pid, user_id=user.id, role=role.value, added_by=by_user))
    session.flush()
    trail.record(
        "member.add", target=f"user:{username}", project_id=pid, details={"role": role.value}
    )


def remove_member(
    session: Session, trail: AuditTrail, pid: str, username: str, role: Role | None
) -> None:
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        raise NotFound(f"no user {username!r}", code="user_not_found")
    query = delete(Membership).where(Membership.project_id == pid, Membership.user_id == user.id)
    if role is not None:
        query = query.where(Membership.role == role.value)
    result = session.execute(query)
    if getattr(result, "rowcount", 0) == 0:
        raise NotFound(f"{username} is not a member with that role", code="member_not_found")
    trail.record(
        "member.remove",
        target=f"user:{username}",
        project_id=pid,
        details={"role": role.value if role else "all"},
    )


@dataclass(frozen=True)
class NewApiKey:
    key: ApiKey
    secret: str


def create_api_key(
    session: Session,
    trail: AuditTrail,
    pid: str,
    *,
    name: str,
    actions: list[Action],
    expires_in_days: int,
    max_days: int,
    by_user: int,
) -> NewApiKey:
    grantable = api_key_grantable()
    refused = sorted(a.value for a in actions if a not in grantable)
    if refused:
        raise InvalidInput(
            "these actions cannot be granted to an API key: " + ", ".join(refused),
            code="action_not_grantable",
            details={"refused": refused, "grantable": sorted(a.value for a in grantable)},
        )
    if not actions:
        raise InvalidInput("an API key needs at least one action", code="no_actions")
    if expires_in_days > max_days:
        raise InvalidInput(f"API keys live at most {max_days} days", code="expiry_too_long")
    key_id, secret, secret_digest = new_api_key()
    key = ApiKey(
        key_id=key_id,
        project_id=pid,
        name=name,
        secret_digest=secret_digest,
        actions=sorted({a.value for a in actions}),
        created_by=by_user,
        expires_at=datetime.now(UTC) + timedelta(days=expires_in_days),
    )
    session.add(key)
    session.flush()
    trail.record(
        "apikey.create",
        target=f"apikey:{key_id}",
        project_id=pid,
        details={"name": name, "actions": key.actions, "expires_at": key.expires_at.isoformat()},
    )
    return NewApiKey(key=key, secret=secret)


def list_api_keys(session: Session, pid: str) -> list[ApiKey]:
    return list(
        session.execute(
            select(ApiKey).where(ApiKey.project_id == pid).order_by(ApiKey.created_at)
        ).scalars()
    )


def revoke_api_key(session: Session, trail: AuditTrail, pid: str, key_id: str) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None or key.project_id != pid:
        raise NotFound(f"no API key {key_id} in {pid}", code="api_key_not_found")
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
    trail.record("apikey.revoke", target=f"apikey:{key_id}", project_id=pid)
    return key


def rotate_key(session: Session, trail: AuditTrail, keyring: Keyring, pid: str) -> tuple[int, int]:
    version, count = keys.rotate(session, keyring, pid)
    trail.record(
        "project.key_rotate",
        target=f"project:{pid}",
        project_id=pid,
        details={"version": version, "rewrapped_data_keys": count},
    )
    return version, count
