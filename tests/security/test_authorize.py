"""``authorize()`` and the action table: every branch by table, the policy by property.

The table tests name one situation per row and the reason the decision must give. The
property tests compare ``authorize`` against an oracle written from the ``ActionInfo``
table alone, and check the promises of the design notes directly: default deny, API keys
only ever do what they were granted, operators hold no data action, a token scoped to one
project opens no other, and an inactive project only allows reading and administration.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvelv.security import actions
from hvelv.security.actions import ACTIONS, ALL_ROLES, Action, ActionInfo, Role, Scope
from hvelv.security.authorize import (
    ALLOW,
    Principal,
    PrincipalKind,
    ProjectFacts,
    Verdict,
    authorize,
)

TODAY = date(2026, 6, 15)
START = date(2026, 1, 1)
END = date(2026, 12, 31)
NO_ROLES: frozenset[Role] = frozenset()

USER = Principal(PrincipalKind.USER, 7, "ada", session_id="s1")
OPERATOR = Principal(PrincipalKind.USER, 1, "olga", is_operator=True, session_id="s2")
PARTICIPANT = Principal(
    PrincipalKind.PARTICIPANT, 5, "0f" * 16, scope_project="p1001", session_id="s3"
)
GUARDIAN = Principal(
    PrincipalKind.PARTICIPANT, 5, "0f" * 16, scope_project="p1001", session_id="s4", acting_for=2
)


def project(
    pid: str = "p1001", status: str = "active", start: date = START, end: date = END
) -> ProjectFacts:
    return ProjectFacts(pid=pid, status=status, approval_start=start, approval_end=end)


def link(scope: str = "p1001") -> Principal:
    return Principal(PrincipalKind.UPLOAD_LINK, "0123456789ab", "0123456789ab", scope_project=scope)


def api_key(*granted: Action, scope: str | None = "p1001") -> Principal:
    return Principal(
        PrincipalKind.API_KEY,
        "0123456789ab",
        "0123456789ab",
        scope_project=scope,
        api_key_actions=frozenset(granted),
    )


def deny(reason: str, status: int = 403) -> Verdict:
    return Verdict(False, reason, status)


def roles(*names: Role) -> frozenset[Role]:
    return frozenset(names)


def of_scope(scope: Scope) -> list[Action]:
    return [a for a, i in ACTIONS.items() if i.scope is scope]


ACTIVE = project()
FROZEN = project(status="frozen")
CLOSED = project(status="closed")
NOT_STARTED = project(start=TODAY + timedelta(days=1))
ENDED = project(end=TODAY - timedelta(days=1))
INACTIVE = {"frozen": FROZEN, "closed": CLOSED, "not_started": NOT_STARTED, "ended": ENDED}


# ---------------------------------------------------------------------------------------
# the action table


def test_every_action_has_exactly_one_entry() -> None:
    assert set(ACTIONS) == set(Action)
    assert len({a.value for a in Action}) == len(Action)
    for action in Action:
        assert actions.info(action) is ACTIONS[action]


def test_only_project_actions_carry_roles_inactive_or_api_key_flags() -> None:
    for action, info in ACTIONS.items():
        if info.scope is not Scope.PROJECT:
            assert info.roles == frozenset(), action
            assert not info.inactive_ok, action
            assert not info.api_key_ok, action
            assert not info.link_ok, action


def test_upload_links_can_only_upload_into_import() -> None:
    assert {a for a, i in ACTIONS.items() if i.link_ok} == {Action.FILES_IMPORT}


def test_public_and_self_actions_are_not_operator_actions() -> None:
    for action in of_scope(Scope.PUBLIC) + of_scope(Scope.SELF):
        assert not ACTIONS[action].operator, action


def test_every_platform_action_is_an_operator_action() -> None:
    assert of_scope(Scope.PLATFORM)
    for action in of_scope(Scope.PLATFORM):
        assert ACTIONS[action].operator, action


def test_every_project_action_is_reachable_by_someone() -> None:
    for action in of_scope(Scope.PROJECT):
        info = ACTIONS[action]
        assert info.roles or info.operator, action


def test_actions_allowed_in_inactive_projects_do_not_write() -> None:
    """A frozen or closed project cannot be changed by its members."""
    for action, info in ACTIONS.items():
        if info.inactive_ok:
            assert not info.writes, action


def test_api_key_grantable_is_exactly_the_flagged_project_actions() -> None:
    grantable = actions.api_key_grantable()
    assert grantable == {a for a, i in ACTIONS.items() if i.api_key_ok}
    assert grantable == {
        Action.PROJECT_READ,
        Action.AUDIT_READ,
        Action.FILES_READ,
        Action.FILES_IMPORT,
        Action.FILES_WRITE,
        Action.FILES_MANAGE,
    }
    assert all(ACTIONS[a].scope is Scope.PROJECT for a in grantable)


def test_operators_hold_no_data_action_in_the_table() -> None:
    """What an operator may do in a project is administration: the members' data actions
    (project.update, apikey.*, audit.read) are not operator actions."""
    project_operator = {a for a in of_scope(Scope.PROJECT) if ACTIONS[a].operator}
    assert project_operator == {
        Action.PROJECT_READ,
        Action.PROJECT_STATUS,
        Action.PROJECT_KEY_ROTATE,
        Action.MEMBER_LIST,
        Action.MEMBER_MANAGE,
    }


def test_action_info_is_immutable() -> None:
    info = ACTIONS[Action.AUDIT_READ]
    with pytest.raises(AttributeError):
        info.operator = True  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# principals and project facts


def test_actor_names_the_kind_and_name() -> None:
    assert USER.actor == "user:ada"
    assert api_key().actor == "api_key:0123456789ab"


@pytest.mark.parametrize(
    ("facts", "today", "active"),
    [
        (ACTIVE, TODAY, True),
        (ACTIVE, START, True),
        (ACTIVE, END, True),
        (ACTIVE, START - timedelta(days=1), False),
        (ACTIVE, END + timedelta(days=1), False),
        (FROZEN, TODAY, False),
        (CLOSED, TODAY, False),
        (project(status="Active"), TODAY, False),
    ],
)
def test_active_on(facts: ProjectFacts, today: date, active: bool) -> None:
    assert facts.active_on(today) is active


# ---------------------------------------------------------------------------------------
# table tests: one row per branch of authorize()

Case = tuple[Principal | None, Action, ProjectFacts | None, frozenset[Role], Verdict]

CASES: dict[str, Case] = {
    # files and upload links
    "files_member_reads": (USER, Action.FILES_READ, ACTIVE, roles(Role.MEMBER), ALLOW),
    "files_auditor_cannot_read": (
        USER,
        Action.FILES_READ,
        ACTIVE,
        roles(Role.AUDITOR),
        deny("role"),
    ),
    "files_member_writes": (USER, Action.FILES_WRITE, ACTIVE, roles(Role.MEMBER), ALLOW),
    "files_member_manages": (USER, Action.FILES_MANAGE, ACTIVE, roles(Role.MEMBER), ALLOW),
    "files_member_no_export": (
        USER,
        Action.FILES_EXPORT,
        ACTIVE,
        roles(Role.MEMBER, Role.OWNER),
        deny("role"),
    ),
    "files_data_manager_export": (
        USER,
        Action.FILES_MANAGE_EXPORT,
        ACTIVE,
        roles(Role.DATA_MANAGER),
        ALLOW,
    ),
    "files_links_managed_by_owner": (
        USER,
        Action.UPLOAD_LINK_MANAGE,
        ACTIVE,
        roles(Role.OWNER),
        ALLOW,
    ),
    "link_imports": (link(), Action.FILES_IMPORT, ACTIVE, NO_ROLES, ALLOW),
    "link_cannot_read": (link(), Action.FILES_READ, ACTIVE, NO_ROLES, deny("upload_link_action")),
    "link_other_project": (
        link("p2002"),
        Action.FILES_IMPORT,
        ACTIVE,
        NO_ROLES,
        deny("token_scope"),
    ),
    "link_frozen_project": (
        link(),
        Action.FILES_IMPORT,
        FROZEN,
        NO_ROLES,
        deny("project_inactive"),
    ),
    "link_not_self": (link(), Action.SELF_READ, None, NO_ROLES, deny("users_only")),
    "api_key_without_project": (
        api_key(*Action, scope=None),
        Action.PROJECT_READ,
        ACTIVE,
        NO_ROLES,
        deny("token_scope"),
    ),
    # public
    "public_anonymous": (None, Action.HEALTH, None, NO_ROLES, ALLOW),
    "public_user": (USER, Action.AUTH_LOGIN, None, NO_ROLES, ALLOW),
    "public_api_key": (api_key(), Action.AUTH_REFRESH, None, NO_ROLES, ALLOW),
    "public_ignores_project": (None, Action.AUTH_ENROL, FROZEN, NO_ROLES, ALLOW),
    # anonymous
    "anonymous_self": (None, Action.SELF_READ, None, NO_ROLES, deny("unauthenticated", 401)),
    "anonymous_platform": (None, Action.USER_CREATE, None, NO_ROLES, deny("unauthenticated", 401)),
    "anonymous_project": (
        None,
        Action.PROJECT_READ,
        ACTIVE,
        roles(Role.OWNER),
        deny("unauthenticated", 401),
    ),
    # self
    "self_user": (USER, Action.SELF_PASSWORD, None, NO_ROLES, ALLOW),
    "self_operator": (OPERATOR, Action.PROJECT_LIST, None, NO_ROLES, ALLOW),
    "self_api_key": (api_key(*Action), Action.SELF_READ, None, NO_ROLES, deny("users_only")),
    "self_api_key_logout": (api_key(), Action.AUTH_LOGOUT, ACTIVE, NO_ROLES, deny("users_only")),
    # platform
    "platform_operator": (OPERATOR, Action.USER_CREATE, None, NO_ROLES, ALLOW),
    "platform_operator_audit": (OPERATOR, Action.PLATFORM_AUDIT_READ, None, NO_ROLES, ALLOW),
    "platform_user": (USER, Action.PROJECT_CREATE, None, NO_ROLES, deny("operator_only")),
    "platform_user_with_roles": (USER, Action.USER_LIST, ACTIVE, ALL_ROLES, deny("operator_only")),
    "platform_api_key": (api_key(*Action), Action.USER_READ, None, NO_ROLES, deny("operator_only")),
    "platform_api_key_flagged_operator": (
        Principal(PrincipalKind.API_KEY, "k", "k", is_operator=True, scope_project="p1001"),
        Action.USER_UPDATE,
        None,
        NO_ROLES,
        deny("operator_only"),
    ),
    # project: missing project, token scope
    "project_missing_user": (USER, Action.PROJECT_READ, None, ALL_ROLES, deny("no_such_project")),
    "project_missing_operator": (
        OPERATOR,
        Action.PROJECT_STATUS,
        None,
        NO_ROLES,
        deny("no_such_project"),
    ),
    "token_scope_mismatch": (
        Principal(PrincipalKind.USER, 7, "ada", scope_project="p2002"),
        Action.PROJECT_READ,
        ACTIVE,
        roles(Role.OWNER),
        deny("token_scope"),
    ),
    "token_scope_match": (
        Principal(PrincipalKind.USER, 7, "ada", scope_project="p1001"),
        Action.PROJECT_READ,
        ACTIVE,
        roles(Role.MEMBER),
        ALLOW,
    ),
    "token_scope_mismatch_operator": (
        Principal(PrincipalKind.USER, 1, "olga", is_operator=True, scope_project="p2002"),
        Action.PROJECT_STATUS,
        ACTIVE,
        NO_ROLES,
        deny("token_scope"),
    ),
    "api_key_other_project": (
        api_key(Action.PROJECT_READ, scope="p2002"),
        Action.PROJECT_READ,
        ACTIVE,
        NO_ROLES,
        deny("token_scope"),
    ),
    # project: API keys
    "api_key_granted": (api_key(Action.AUDIT_READ), Action.AUDIT_READ, ACTIVE, NO_ROLES, ALLOW),
    "api_key_not_granted": (
        api_key(Action.PROJECT_READ),
        Action.AUDIT_READ,
        ACTIVE,
        NO_ROLES,
        deny("api_key_action"),
    ),
    "api_key_granted_but_not_api_key_ok": (
        api_key(Action.MEMBER_MANAGE),
        Action.MEMBER_MANAGE,
        ACTIVE,
        NO_ROLES,
        deny("api_key_action"),
    ),
    "api_key_roles_ignored": (
        api_key(),
        Action.PROJECT_READ,
        ACTIVE,
        ALL_ROLES,
        deny("api_key_action"),
    ),
    "api_key_operator_flag_ignored": (
        Principal(PrincipalKind.API_KEY, "k", "k", is_operator=True, scope_project="p1001"),
        Action.PROJECT_STATUS,
        ACTIVE,
        NO_ROLES,
        deny("api_key_action"),
    ),
    "api_key_inactive_ok_frozen": (
        api_key(Action.PROJECT_READ),
        Action.PROJECT_READ,
        FROZEN,
        NO_ROLES,
        ALLOW,
    ),
    # project: roles
    "role_owner_update": (USER, Action.PROJECT_UPDATE, ACTIVE, roles(Role.OWNER), ALLOW),
    "role_auditor_audit": (USER, Action.AUDIT_READ, ACTIVE, roles(Role.AUDITOR), ALLOW),
    "role_one_of_several": (
        USER,
        Action.MEMBER_LIST,
        ACTIVE,
        roles(Role.MEMBER, Role.DATA_MANAGER),
        ALLOW,
    ),
    "role_too_small": (USER, Action.PROJECT_UPDATE, ACTIVE, roles(Role.MEMBER), deny("role")),
    "role_member_audit": (
        USER,
        Action.AUDIT_READ,
        ACTIVE,
        roles(Role.MEMBER, Role.DATA_MANAGER),
        deny("role"),
    ),
    "role_status_is_operator_only": (USER, Action.PROJECT_STATUS, ACTIVE, ALL_ROLES, deny("role")),
    "not_a_member": (USER, Action.PROJECT_READ, ACTIVE, NO_ROLES, deny("not_a_member")),
    # project: operators administer, but hold no data actions
    "operator_status": (OPERATOR, Action.PROJECT_STATUS, ACTIVE, NO_ROLES, ALLOW),
    "operator_members": (OPERATOR, Action.MEMBER_MANAGE, ACTIVE, NO_ROLES, ALLOW),
    "operator_read": (OPERATOR, Action.PROJECT_READ, ACTIVE, NO_ROLES, ALLOW),
    "operator_rotate": (OPERATOR, Action.PROJECT_KEY_ROTATE, ACTIVE, NO_ROLES, ALLOW),
    "operator_no_audit": (OPERATOR, Action.AUDIT_READ, ACTIVE, NO_ROLES, deny("not_a_member")),
    "operator_no_update": (OPERATOR, Action.PROJECT_UPDATE, ACTIVE, NO_ROLES, deny("not_a_member")),
    "operator_no_apikeys": (OPERATOR, Action.APIKEY_MANAGE, ACTIVE, NO_ROLES, deny("not_a_member")),
    "operator_member_small_role": (
        OPERATOR,
        Action.APIKEY_LIST,
        ACTIVE,
        roles(Role.MEMBER),
        deny("role"),
    ),
    "operator_who_is_owner": (OPERATOR, Action.APIKEY_LIST, ACTIVE, roles(Role.OWNER), ALLOW),
    # inactive projects
    "frozen_read_member": (USER, Action.PROJECT_READ, FROZEN, roles(Role.MEMBER), ALLOW),
    "closed_audit_auditor": (USER, Action.AUDIT_READ, CLOSED, roles(Role.AUDITOR), ALLOW),
    "frozen_update_owner": (
        USER,
        Action.PROJECT_UPDATE,
        FROZEN,
        roles(Role.OWNER),
        deny("project_inactive"),
    ),
    "closed_members_owner": (
        USER,
        Action.MEMBER_MANAGE,
        CLOSED,
        roles(Role.OWNER),
        deny("project_inactive"),
    ),
    "not_started_apikeys": (
        USER,
        Action.APIKEY_LIST,
        NOT_STARTED,
        roles(Role.OWNER),
        deny("project_inactive"),
    ),
    "ended_rotate_owner": (
        USER,
        Action.PROJECT_KEY_ROTATE,
        ENDED,
        roles(Role.OWNER),
        deny("project_inactive"),
    ),
    "frozen_operator_unfreezes": (OPERATOR, Action.PROJECT_STATUS, FROZEN, NO_ROLES, ALLOW),
    "closed_operator_members": (OPERATOR, Action.MEMBER_MANAGE, CLOSED, NO_ROLES, ALLOW),
    "ended_operator_rotate": (OPERATOR, Action.PROJECT_KEY_ROTATE, ENDED, NO_ROLES, ALLOW),
    "frozen_operator_owner_update": (
        OPERATOR,
        Action.PROJECT_UPDATE,
        FROZEN,
        roles(Role.OWNER),
        deny("project_inactive"),
    ),
    "frozen_operator_still_no_audit": (
        OPERATOR,
        Action.AUDIT_READ,
        FROZEN,
        NO_ROLES,
        deny("not_a_member"),
    ),
    # participants: only the participant routes, whatever the project's state
    "participant_read": (PARTICIPANT, Action.PARTICIPANT_READ, None, NO_ROLES, ALLOW),
    "guardian_consent": (GUARDIAN, Action.PARTICIPANT_CONSENT, FROZEN, NO_ROLES, ALLOW),
    "participant_logout": (PARTICIPANT, Action.PARTICIPANT_LOGOUT, None, NO_ROLES, ALLOW),
    "participant_login_public": (None, Action.PARTICIPANT_LOGIN, None, NO_ROLES, ALLOW),
    "portal_pages_public": (None, Action.PORTAL_PUBLIC, None, NO_ROLES, ALLOW),
    "anonymous_participant_route": (
        None,
        Action.PARTICIPANT_READ,
        None,
        NO_ROLES,
        deny("unauthenticated", 401),
    ),
    "user_on_participant_route": (
        USER,
        Action.PARTICIPANT_CONSENT,
        ACTIVE,
        ALL_ROLES,
        deny("participants_only"),
    ),
    "api_key_on_participant_route": (
        api_key(*Action),
        Action.PARTICIPANT_LOGOUT,
        None,
        NO_ROLES,
        deny("participants_only"),
    ),
    "participant_on_project_route": (
        PARTICIPANT,
        Action.CONSENT_DECIDE,
        ACTIVE,
        ALL_ROLES,
        deny("users_only"),
    ),
    "participant_on_self_route": (
        PARTICIPANT,
        Action.SELF_READ,
        None,
        NO_ROLES,
        deny("users_only"),
    ),
    "participant_on_platform_route": (
        PARTICIPANT,
        Action.USER_CREATE,
        None,
        NO_ROLES,
        deny("operator_only"),
    ),
    "participant_other_project": (
        PARTICIPANT,
        Action.CONSENT_READ,
        project(pid="p2002"),
        NO_ROLES,
        deny("token_scope"),
    ),
    # consent actions by role
    "consent_read_auditor": (USER, Action.CONSENT_READ, ACTIVE, roles(Role.AUDITOR), ALLOW),
    "consent_manage_member": (
        USER,
        Action.CONSENT_MANAGE,
        ACTIVE,
        roles(Role.MEMBER),
        deny("role"),
    ),
    "consent_manage_dm": (USER, Action.CONSENT_MANAGE, ACTIVE, roles(Role.DATA_MANAGER), ALLOW),
    "consent_participants_auditor": (
        USER,
        Action.CONSENT_PARTICIPANT_READ,
        ACTIVE,
        roles(Role.AUDITOR, Role.MEMBER),
        deny("role"),
    ),
    "consent_enrol_dm": (
        USER,
        Action.CONSENT_PARTICIPANT_MANAGE,
        ACTIVE,
        roles(Role.DATA_MANAGER),
        ALLOW,
    ),
    "consent_decide_member": (USER, Action.CONSENT_DECIDE, ACTIVE, roles(Role.MEMBER), ALLOW),
    "consent_decide_auditor": (
        USER,
        Action.CONSENT_DECIDE,
        ACTIVE,
        roles(Role.AUDITOR),
        deny("role"),
    ),
    "consent_decide_frozen": (
        USER,
        Action.CONSENT_DECIDE,
        FROZEN,
        roles(Role.MEMBER),
        deny("project_inactive"),
    ),
    "consent_decide_operator": (
        OPERATOR,
        Action.CONSENT_DECIDE,
        ACTIVE,
        NO_ROLES,
        deny("not_a_member"),
    ),
    # datasets: data managers ingest and manage, researchers read and query, nobody else
    "dataset_read_member": (USER, Action.DATASET_READ, ACTIVE, roles(Role.MEMBER), ALLOW),
    "dataset_read_auditor": (USER, Action.DATASET_READ, ACTIVE, roles(Role.AUDITOR), deny("role")),
    "dataset_manage_dm": (USER, Action.DATASET_MANAGE, ACTIVE, roles(Role.DATA_MANAGER), ALLOW),
    "dataset_manage_member_owner": (
        USER,
        Action.DATASET_MANAGE,
        ACTIVE,
        roles(Role.MEMBER, Role.OWNER),
        deny("role"),
    ),
    "dataset_query_member": (USER, Action.DATASET_QUERY, ACTIVE, roles(Role.MEMBER), ALLOW),
    "dataset_query_auditor": (
        USER,
        Action.DATASET_QUERY,
        ACTIVE,
        roles(Role.AUDITOR),
        deny("role"),
    ),
    "dataset_query_frozen": (
        USER,
        Action.DATASET_QUERY,
        FROZEN,
        roles(Role.MEMBER),
        deny("project_inactive"),
    ),
    "dataset_query_operator": (
        OPERATOR,
        Action.DATASET_QUERY,
        ACTIVE,
        NO_ROLES,
        deny("not_a_member"),
    ),
    "consent_log_auditor_closed": (
        USER,
        Action.CONSENT_LOG_READ,
        CLOSED,
        roles(Role.AUDITOR),
        ALLOW,
    ),
    "consent_log_member": (USER, Action.CONSENT_LOG_READ, ACTIVE, roles(Role.MEMBER), deny("role")),
    "consent_deletions_dm_frozen": (
        USER,
        Action.CONSENT_DELETION_READ,
        FROZEN,
        roles(Role.DATA_MANAGER),
        ALLOW,
    ),
    "consent_deletion_complete_frozen": (
        USER,
        Action.CONSENT_DELETION_COMPLETE,
        FROZEN,
        roles(Role.DATA_MANAGER),
        deny("project_inactive"),
    ),
    "frozen_api_key_not_inactive_ok": (
        Principal(
            PrincipalKind.API_KEY,
            "k",
            "k",
            scope_project="p1001",
            api_key_actions=frozenset(Action),
        ),
        Action.APIKEY_LIST,
        FROZEN,
        NO_ROLES,
        deny("api_key_action"),
    ),
}


@pytest.mark.parametrize(
    ("principal", "action", "facts", "held", "expected"), list(CASES.values()), ids=list(CASES)
)
def test_authorize_table(
    principal: Principal | None,
    action: Action,
    facts: ProjectFacts | None,
    held: frozenset[Role],
    expected: Verdict,
) -> None:
    assert authorize(principal, action, facts, held, TODAY) == expected


def test_the_table_covers_every_action() -> None:
    assert {case[1] for case in CASES.values()} == set(Action)


@pytest.mark.parametrize("state", sorted(INACTIVE))
@pytest.mark.parametrize("action", of_scope(Scope.PROJECT))
def test_inactive_projects_for_a_user_holding_every_role(state: str, action: Action) -> None:
    info = ACTIONS[action]
    verdict = authorize(USER, action, INACTIVE[state], ALL_ROLES, TODAY)
    if not info.roles:
        assert verdict == deny("role")
    elif info.inactive_ok:
        assert verdict == ALLOW
    else:
        assert verdict == deny("project_inactive")


@pytest.mark.parametrize("state", sorted(INACTIVE))
@pytest.mark.parametrize("action", of_scope(Scope.PROJECT))
def test_inactive_projects_for_an_operator(state: str, action: Action) -> None:
    verdict = authorize(OPERATOR, action, INACTIVE[state], NO_ROLES, TODAY)
    assert verdict.allowed is ACTIONS[action].operator


@pytest.mark.parametrize("delta", [0, 1, 180, 364])
def test_approval_period_is_inclusive(delta: int) -> None:
    facts = project(start=TODAY - timedelta(days=delta), end=TODAY)
    assert authorize(USER, Action.PROJECT_UPDATE, facts, roles(Role.OWNER), TODAY) == ALLOW
    facts = project(start=TODAY, end=TODAY + timedelta(days=delta))
    assert authorize(USER, Action.PROJECT_UPDATE, facts, roles(Role.OWNER), TODAY) == ALLOW


# ---------------------------------------------------------------------------------------
# property tests against an oracle written from the action table

PIDS = ("p1001", "p2002")
STATUSES = ("active", "frozen", "closed")


def oracle(
    principal: Principal | None,
    action: Action,
    facts: ProjectFacts | None,
    held: frozenset[Role],
    today: date,
) -> bool:
    """Who may do what, read straight off the table (one rule per column)."""
    info: ActionInfo = ACTIONS[action]
    is_user = principal is not None and principal.kind is PrincipalKind.USER
    is_key = principal is not None and principal.kind is PrincipalKind.API_KEY
    is_op = is_user and principal is not None and principal.is_operator
    is_participant = principal is not None and principal.kind is PrincipalKind.PARTICIPANT
    rules = {
        Scope.PUBLIC: lambda: True,
        Scope.SELF: lambda: is_user,
        Scope.PLATFORM: lambda: is_op and info.operator,
        Scope.PARTICIPANT: lambda: is_participant,
    }
    if info.scope in rules:
        return rules[info.scope]()
    if principal is None or facts is None:
        return False
    if principal.scope_project not in (None, facts.pid):
        return False
    if not is_user and principal.scope_project is None:
        return False  # API keys and upload links belong to one project
    key_may = is_key and info.api_key_ok and action in principal.api_key_actions
    link_may = principal.kind is PrincipalKind.UPLOAD_LINK and info.link_ok
    role_may = is_user and any(role in info.roles for role in held)
    admin_may = is_op and info.operator
    running = (
        facts.status == "active" and facts.approval_start <= today and today <= facts.approval_end
    )
    return bool(key_may or link_may or role_may or admin_may) and (
        running or info.inactive_ok or admin_may
    )


action_st = st.sampled_from(list(Action))
project_action_st = st.sampled_from(of_scope(Scope.PROJECT))
roles_st = st.frozensets(st.sampled_from(list(Role)))
dates_st = st.dates(min_value=date(2025, 1, 1), max_value=date(2027, 12, 31))
scope_st = st.one_of(st.none(), st.sampled_from(PIDS))


@st.composite
def principals(draw: st.DrawFn, kind: PrincipalKind | None = None) -> Principal:
    kind = kind or draw(st.sampled_from(list(PrincipalKind)))
    return Principal(
        kind=kind,
        id=draw(st.integers(1, 5)),
        name=draw(st.sampled_from(["ada", "bjorn", "olga"])),
        is_operator=draw(st.booleans()),
        scope_project=draw(scope_st),
        api_key_actions=draw(st.frozensets(action_st)),
        session_id=draw(st.none() | st.just("s1")),
    )


@st.composite
def facts_st(draw: st.DrawFn) -> ProjectFacts:
    start = draw(dates_st)
    return ProjectFacts(
        pid=draw(st.sampled_from(PIDS)),
        status=draw(st.sampled_from(STATUSES)),
        approval_start=start,
        approval_end=start + timedelta(days=draw(st.integers(-30, 700))),
    )


maybe_principal = st.none() | principals()
maybe_facts = st.none() | facts_st()
bounded = settings(max_examples=300, deadline=None)


@bounded
@given(maybe_principal, action_st, maybe_facts, roles_st, dates_st)
def test_default_deny_matches_the_table(
    principal: Principal | None,
    action: Action,
    facts: ProjectFacts | None,
    held: frozenset[Role],
    today: date,
) -> None:
    verdict = authorize(principal, action, facts, held, today)
    assert verdict.allowed is oracle(principal, action, facts, held, today)
    if verdict.allowed:
        assert verdict == ALLOW
    else:
        assert verdict.status == (401 if principal is None else 403)
        assert verdict.reason


@bounded
@given(principals(PrincipalKind.API_KEY), action_st, maybe_facts, roles_st, dates_st)
def test_api_keys_only_do_what_they_were_granted(
    key: Principal, action: Action, facts: ProjectFacts | None, held: frozenset[Role], today: date
) -> None:
    if authorize(key, action, facts, held, today).allowed:
        info = ACTIONS[action]
        assert info.scope is Scope.PUBLIC or (
            info.api_key_ok and action in key.api_key_actions and facts is not None
        )


@bounded
@given(principals(PrincipalKind.USER), project_action_st, facts_st(), roles_st, dates_st)
def test_operators_get_no_data_action_through_being_operators(
    user: Principal, action: Action, facts: ProjectFacts, held: frozenset[Role], today: date
) -> None:
    operator = Principal(
        PrincipalKind.USER, user.id, user.name, is_operator=True, scope_project=user.scope_project
    )
    info = ACTIONS[action]
    if not info.operator:
        assert not authorize(operator, action, facts, NO_ROLES, today).allowed
        # being an operator adds nothing on top of the roles held
        with_roles = authorize(operator, action, facts, held, today)
        plain = Principal(PrincipalKind.USER, user.id, user.name, scope_project=user.scope_project)
        assert with_roles == authorize(plain, action, facts, held, today)


@bounded
@given(principals(), project_action_st, facts_st(), roles_st, dates_st)
def test_a_principal_scoped_to_one_project_opens_no_other(
    principal: Principal, action: Action, facts: ProjectFacts, held: frozenset[Role], today: date
) -> None:
    other = next(pid for pid in PIDS if pid != facts.pid)
    scoped = Principal(
        principal.kind,
        principal.id,
        principal.name,
        is_operator=principal.is_operator,
        scope_project=other,
        api_key_actions=principal.api_key_actions,
    )
    assert authorize(scoped, action, facts, held, today) == deny("token_scope")


@bounded
@given(principals(), project_action_st, facts_st(), roles_st, dates_st)
def test_inactive_projects_only_allow_reading_and_administration(
    principal: Principal, action: Action, facts: ProjectFacts, held: frozenset[Role], today: date
) -> None:
    if facts.active_on(today):
        return
    info = ACTIONS[action]
    if authorize(principal, action, facts, held, today).allowed:
        by_admin = principal.kind is PrincipalKind.USER and principal.is_operator and info.operator
        assert info.inactive_ok or by_admin
        assert not info.writes or by_admin


@bounded
@given(maybe_principal, action_st, maybe_facts, roles_st, roles_st, dates_st)
def test_more_roles_never_take_permission_away(
    principal: Principal | None,
    action: Action,
    facts: ProjectFacts | None,
    held: frozenset[Role],
    extra: frozenset[Role],
    today: date,
) -> None:
    if authorize(principal, action, facts, held, today).allowed:
        assert authorize(principal, action, facts, held | extra, today).allowed
