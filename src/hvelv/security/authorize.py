"""The one authorization decision: ``authorize(principal, action, project, roles, today)``.

Pure and default-deny: anything not explicitly allowed by the action table is refused.
Operators administer (platform actions and project administration) but hold no data
action inside any project.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from hvelv.security.actions import ACTIONS, Action, Role, Scope


class PrincipalKind(StrEnum):
    USER = "user"
    API_KEY = "api_key"
    UPLOAD_LINK = "upload_link"
    PARTICIPANT = "participant"  # a research participant (or their proxy) signed in by invitation


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (with a login session), a project API key, an upload link, or
    a participant session (``scope_project`` is the participant's project, ``id`` their
    participant id and ``acting_for`` the proxy id when a guardian signed in)."""

    kind: PrincipalKind
    id: int | str
    name: str
    is_operator: bool = False
    scope_project: str | None = None  # token scope, or the API key's project
    api_key_actions: frozenset[Action] = field(default_factory=frozenset)
    session_id: str | None = None
    acting_for: int | None = None  # participant sessions: the proxy id, when a proxy acts

    @property
    def actor(self) -> str:
        return f"{self.kind.value}:{self.name}"


@dataclass(frozen=True)
class ProjectFacts:
    pid: str
    status: str
    approval_start: date
    approval_end: date

    def active_on(self, today: date) -> bool:
        return self.status == "active" and self.approval_start <= today <= self.approval_end


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str
    status: int = 200


ALLOW = Verdict(True, "allowed")


def _deny(reason: str, status: int = 403) -> Verdict:
    return Verdict(False, reason, status)


def authorize(
    principal: Principal | None,
    action: Action,
    project: ProjectFacts | None,
    roles: frozenset[Role],
    today: date,
) -> Verdict:
    """Decide whether ``principal`` may perform ``action`` (in ``project``, holding ``roles``)."""
    info = ACTIONS[action]
    if info.scope is Scope.PUBLIC:
        return ALLOW
    if principal is None:
        return _deny("unauthenticated", 401)
    if info.scope is Scope.PARTICIPANT:
        if principal.kind is PrincipalKind.PARTICIPANT:
            return ALLOW
        return _deny("participants_only")
    if info.scope is Scope.SELF:
        if principal.kind is PrincipalKind.USER:
            return ALLOW
        return _deny("users_only")
    if info.scope is Scope.PLATFORM:
        if principal.kind is PrincipalKind.USER and principal.is_operator and info.operator:
            return ALLOW
        return _deny("operator_only")
    # project scope
    if project is None:
        return _deny("no_such_project")
    if principal.scope_project != project.pid and (
        principal.scope_project is not None or principal.kind is not PrincipalKind.USER
    ):  # API keys and upload links always belong to exactly one project
        return _deny("token_scope")
    by_operator = False
    if principal.kind is PrincipalKind.UPLOAD_LINK:
        if not info.link_ok:
            return _deny("upload_link_action")
    elif principal.kind is PrincipalKind.API_KEY:
        if not (info.api_key_ok and action in principal.api_key_actions):
            return _deny("api_key_action")
    elif principal.kind is PrincipalKind.PARTICIPANT:
        # participants act only on their own consent, through the participant routes
        return _deny("users_only")
    else:
        by_role = bool(roles & info.roles)
        by_operator = principal.is_operator and info.operator
        if not (by_role or by_operator):
            return _deny("role" if roles else "not_a_member")
    if not project.active_on(today) and not (info.inactive_ok or by_operator):
        return _deny("project_inactive")
    return ALLOW
