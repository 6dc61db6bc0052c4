"""Every action the API can perform, and which roles may perform it.

A route cannot be registered without naming one of these actions; ``authorize()`` is the
only place that turns (principal, action, project) into allow or deny.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    PUBLIC = "public"  # no authentication (health, token endpoint, OpenAPI)
    SELF = "self"  # any authenticated user, about themselves
    PLATFORM = "platform"  # operators, outside any project
    PROJECT = "project"  # inside one project (the {pid} in the path)
    PARTICIPANT = "participant"  # a signed-in research participant, about their own consent


class Role(StrEnum):
    OWNER = "owner"
    DATA_MANAGER = "data_manager"
    MEMBER = "member"
    AUDITOR = "auditor"


@dataclass(frozen=True)
class ActionInfo:
    scope: Scope
    writes: bool
    roles: frozenset[Role] = frozenset()
    operator: bool = False  # operators may perform it (platform or project administration)
    # allowed to project roles while the project is frozen, closed or outside its approval
    # period; operators keep their administration actions (they unfreeze projects)
    inactive_ok: bool = False
    api_key_ok: bool = False  # may be granted to a project API key
    link_ok: bool = False  # an upload link may perform it (upload into import only)


class Action(StrEnum):
    # public
    HEALTH = "health.read"
    AUTH_LOGIN = "auth.login"
    AUTH_REFRESH = "auth.refresh"
    AUTH_ENROL = "auth.totp_enrol"
    # self
    AUTH_LOGOUT = "auth.logout"
    SELF_READ = "self.read"
    SELF_PASSWORD = "self.password"
    PROJECT_LIST = "project.list"
    # platform (operators)
    USER_CREATE = "user.create"
    USER_LIST = "user.list"
    USER_READ = "user.read"
    USER_UPDATE = "user.update"
    PROJECT_CREATE = "project.create"
    PLATFORM_AUDIT_READ = "platform_audit.read"
    # project
    PROJECT_READ = "project.read"
    PROJECT_UPDATE = "project.update"
    PROJECT_STATUS = "project.status"
    PROJECT_KEY_ROTATE = "project.key_rotate"
    MEMBER_LIST = "member.list"
    MEMBER_MANAGE = "member.manage"
    APIKEY_LIST = "apikey.list"
    APIKEY_MANAGE = "apikey.manage"
    AUDIT_READ = "audit.read"
    FILES_READ = "files.read"
    FILES_IMPORT = "files.import"
    FILES_WRITE = "files.write"
    FILES_EXPORT = "files.export"
    FILES_MANAGE = "files.manage"
    FILES_MANAGE_EXPORT = "files.manage_export"
    UPLOAD_LINK_MANAGE = "upload_link.manage"
    CONSENT_READ = "consent.read"
    CONSENT_MANAGE = "consent.manage"
    CONSENT_PARTICIPANT_READ = "consent_participant.read"
    CONSENT_PARTICIPANT_MANAGE = "consent_participant.manage"
    CONSENT_DECIDE = "consent.decide"
    CONSENT_LOG_READ = "consent_log.read"
    CONSENT_DELETION_READ = "consent_deletion.read"
    CONSENT_DELETION_COMPLETE = "consent_deletion.complete"
    DATASET_READ = "dataset.read"
    DATASET_MANAGE = "dataset.manage"
    DATASET_QUERY = "dataset.query"
    # participants
    PARTICIPANT_LOGIN = "participant.login"
    PARTICIPANT_READ = "participant.read"
    PARTICIPANT_CONSENT = "participant.consent"
    PARTICIPANT_LOGOUT = "participant.logout"
    # the participant portal's public pages (sign-in pages, style sheet, language choice)
    PORTAL_PUBLIC = "portal.public"


ALL_ROLES = frozenset(Role)
# roles that work with a project's data (auditors read the audit log only)
_RESEARCHERS = frozenset({Role.OWNER, Role.DATA_MANAGER, Role.MEMBER})
_MANAGERS = frozenset({Role.OWNER, Role.DATA_MANAGER})
_P = Scope.PROJECT

ACTIONS: dict[Action, ActionInfo] = {
    Action.HEALTH: ActionInfo(Scope.PUBLIC, writes=False),
    Action.AUTH_LOGIN: ActionInfo(Scope.PUBLIC, writes=True),
    Action.AUTH_REFRESH: ActionInfo(Scope.PUBLIC, writes=True),
    Action.AUTH_ENROL: ActionInfo(Scope.PUBLIC, writes=True),
    Action.AUTH_LOGOUT: ActionInfo(Scope.SELF, writes=True),
    Action.SELF_READ: ActionInfo(Scope.SELF, writes=False),
    Action.SELF_PASSWORD: ActionInfo(Scope.SELF, writes=True),
    Action.PROJECT_LIST: ActionInfo(Scope.SELF, writes=False),
    Action.USER_CREATE: ActionInfo(Scope.PLATFORM, writes=True, operator=True),
    Action.USER_LIST: ActionInfo(Scope.PLATFORM, writes=False, operator=True),
    Action.USER_READ: ActionInfo(Scope.PLATFORM, writes=False, operator=True),
    Action.USER_UPDATE: ActionInfo(Scope.PLATFORM, writes=True, operator=True),
    Action.PROJECT_CREATE: ActionInfo(Scope.PLATFORM, writes=True, operator=True),
    Action.PLATFORM_AUDIT_READ: ActionInfo(Scope.PLATFORM, writes=False, operator=True),
    Action.PROJECT_READ: ActionInfo(
        _P, writes=False, roles=ALL_ROLES, operator=True, inactive_ok=True, api_key_ok=True
    ),
    Action.PROJECT_UPDATE: ActionInfo(_P, writes=True, roles=frozenset({Role.OWNER})),
    Action.PROJECT_STATUS: ActionInfo(_P, writes=True, operator=True),
    Action.PROJECT_KEY_ROTATE: ActionInfo(
        _P, writes=True, roles=frozenset({Role.OWNER}), operator=True
    ),
    Action.MEMBER_LIST: ActionInfo(
        _P,
        writes=False,
        roles=frozenset({Role.OWNER, Role.DATA_MANAGER, Role.AUDITOR}),
        operator=True,
    ),
    Action.MEMBER_MANAGE: ActionInfo(_P, writes=True, roles=frozenset({Role.OWNER}), operator=True),
    Action.APIKEY_LIST: ActionInfo(_P, writes=False, roles=frozenset({Role.OWNER})),
    Action.APIKEY_MANAGE: ActionInfo(_P, writes=True, roles=frozenset({Role.OWNER})),
    Action.AUDIT_READ: ActionInfo(
        _P,
        writes=False,
        roles=frozenset({Role.OWNER, Role.AUDITOR}),
        inactive_ok=True,
        api_key_ok=True,
    ),
    Action.FILES_READ: ActionInfo(_P, writes=False, roles=_RESEARCHERS, api_key_ok=True),
    Action.FILES_IMPORT: ActionInfo(
        _P, writes=True, roles=_RESEARCHERS, api_key_ok=True, link_ok=True
    ),
    Action.FILES_WRITE: ActionInfo(_P, writes=True, roles=_RESEARCHERS, api_key_ok=True),
    Action.FILES_EXPORT: ActionInfo(_P, writes=True, roles=frozenset({Role.DATA_MANAGER})),
    Action.FILES_MANAGE: ActionInfo(_P, writes=True, roles=_RESEARCHERS, api_key_ok=True),
    Action.FILES_MANAGE_EXPORT: ActionInfo(_P, writes=True, roles=frozenset({Role.DATA_MANAGER})),
    Action.UPLOAD_LINK_MANAGE: ActionInfo(
        _P, writes=True, roles=frozenset({Role.OWNER, Role.DATA_MANAGER})
    ),
    # consent: owners and data managers manage studies, templates and participants; every
    # member may ask for decisions and snapshots; auditors read the decision log
    Action.CONSENT_READ: ActionInfo(_P, writes=False, roles=ALL_ROLES),
    Action.CONSENT_MANAGE: ActionInfo(_P, writes=True, roles=_MANAGERS),
    Action.CONSENT_PARTICIPANT_READ: ActionInfo(_P, writes=False, roles=_MANAGERS),
    Action.CONSENT_PARTICIPANT_MANAGE: ActionInfo(_P, writes=True, roles=_MANAGERS),
    Action.CONSENT_DECIDE: ActionInfo(
        _P, writes=True, roles=frozenset({Role.OWNER, Role.DATA_MANAGER, Role.MEMBER})
    ),
    Action.CONSENT_LOG_READ: ActionInfo(
        _P, writes=False, roles=frozenset({Role.OWNER, Role.AUDITOR}), inactive_ok=True
    ),
    Action.CONSENT_DELETION_READ: ActionInfo(_P, writes=False, roles=_MANAGERS, inactive_ok=True),
    Action.CONSENT_DELETION_COMPLETE: ActionInfo(_P, writes=True, roles=_MANAGERS),
    # datasets: data managers ingest and manage; researchers list and query (a query's consent
    # snapshot and audit event are written in their own short transaction, so the request
    # itself only reads)
    Action.DATASET_READ: ActionInfo(_P, writes=False, roles=_RESEARCHERS),
    Action.DATASET_MANAGE: ActionInfo(_P, writes=True, roles=frozenset({Role.DATA_MANAGER})),
    Action.DATASET_QUERY: ActionInfo(_P, writes=False, roles=_RESEARCHERS),
    Action.PARTICIPANT_LOGIN: ActionInfo(Scope.PUBLIC, writes=True),
    Action.PARTICIPANT_READ: ActionInfo(Scope.PARTICIPANT, writes=False),
    Action.PARTICIPANT_CONSENT: ActionInfo(Scope.PARTICIPANT, writes=True),
    Action.PARTICIPANT_LOGOUT: ActionInfo(Scope.PARTICIPANT, writes=True),
    Action.PORTAL_PUBLIC: ActionInfo(Scope.PUBLIC, writes=False),
}

assert set(ACTIONS) == set(Action), "every action needs an ActionInfo"


def info(action: Action) -> ActionInfo:
    return ACTIONS[action]


def api_key_grantable() -> frozenset[Action]:
    """Actions a project owner may grant to an API key."""
    return frozenset(a for a, i in ACTIONS.items() if i.api_key_ok)
